//! The accept loop shared by the in-process servers (token server, proxy,
//! the stand-ins' gate and CDN).
//!
//! Both are hyper 1 HTTP/1.1 servers on 127.0.0.1 that must stop, with every
//! open connection, when their owner is dropped. Keeping the connection tasks
//! in a `JoinSet` owned by the accept task gives that for free: aborting the
//! accept task drops the set, which aborts the connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Aborts a background task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds 127.0.0.1 on a free port.
pub(crate) async fn bind_loopback() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Accepts connections until dropped, handing each to `serve` in its own task.
pub(crate) fn spawn_accept_loop<F, Fut>(listener: TcpListener, serve: F) -> AbortOnDrop
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(stream));
                }
                // Out of file descriptors and the like: wait and go on rather
                // than spin or silently stop serving.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    });
    AbortOnDrop(task)
}

/// Serves HTTP/1.1 on `listener` until dropped: every request is answered by
/// `answer`, given a clone of `state`.
pub(crate) fn spawn_http1_server<S, F, Fut, B>(
    listener: TcpListener,
    state: Arc<S>,
    answer: F,
) -> AbortOnDrop
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    spawn_accept_loop(listener, move |stream| {
        let state = state.clone();
        let answer = answer.clone();
        async move {
            let service = hyper::service::service_fn(move |req| {
                let response = answer(state.clone(), req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
}
