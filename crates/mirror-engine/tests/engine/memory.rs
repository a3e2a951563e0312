//! An in-memory registry that is both a [`Source`] and a [`Destination`], so
//! the engine's ordering, dedup, cancellation and failure isolation are tested
//! in milliseconds. Every endpoint of a test writes to one shared [`Log`], in
//! the order things happened; faults (corrupt bytes, failing GETs, answers to
//! uploads, gates that hold a blob until the test lets it go) are set per blob.
//! Repositories made on one [`MemoryHost`] mount from each other by that
//! host's rule ([`MountWhen`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use mirror_engine::{
    Capabilities, Destination, EndpointError, Mount, MountOrigin, MountSetting, MountWhen,
    Resolved, Source, UploadSlot,
};
use mirror_oci::{BlobStream, Descriptor, Digest, RawManifest, StreamError, digest_of};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What an endpoint was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Resolve(String),
    /// A manifest GET by digest (source side).
    GetManifest(Digest),
    /// A blob GET (source side), logged when asked, before any gate.
    GetBlob(Digest),
    /// A destination HEAD by tag or digest.
    HeadManifest(String),
    HeadBlob(Digest),
    /// An upload began reading its body.
    UploadStarted(Digest),
    /// An upload read its whole body and the blob became visible.
    Committed(Digest),
    /// An upload failed (its body failed, or the destination refused it).
    UploadFailed(Digest),
    /// A source stream was dropped before it ended (its transfer was cancelled).
    StreamDropped(Digest),
    /// A manifest PUT by tag or digest, with the manifest's digest.
    PutManifest {
        reference: String,
        digest: Digest,
    },
    /// A blob mounted from another repository of the host.
    Mounted {
        digest: Digest,
        from: String,
    },
    /// A mount the host refused (nothing to mount, or no committed manifest).
    MountRefused(Digest),
    EnsureRepository,
    Finish,
}

/// One entry of the log: which endpoint, what, and when (tokio's clock, so a
/// paused test clock gives exact times).
#[derive(Debug, Clone)]
pub struct Entry {
    pub endpoint: String,
    pub op: Op,
    pub at: Instant,
}

/// The operations of every endpoint of a test, in order.
#[derive(Debug, Default)]
pub struct Log(Mutex<Vec<Entry>>);

impl Log {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn push(&self, endpoint: &str, op: Op) {
        self.0.lock().expect("log lock").push(Entry {
            endpoint: endpoint.to_owned(),
            op,
            at: Instant::now(),
        });
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.0.lock().expect("log lock").clone()
    }

    /// The operations of one endpoint.
    pub fn of(&self, endpoint: &str) -> Vec<Op> {
        self.entries()
            .into_iter()
            .filter(|e| e.endpoint == endpoint)
            .map(|e| e.op)
            .collect()
    }

    /// How many operations of one endpoint `matches` accepts.
    pub fn count(&self, endpoint: &str, matches: impl Fn(&Op) -> bool) -> usize {
        self.of(endpoint).iter().filter(|op| matches(op)).count()
    }

    /// Waits (on tokio's clock) until some entry satisfies `matches`.
    pub async fn wait_for(&self, matches: impl Fn(&Entry) -> bool) {
        loop {
            if self.entries().iter().any(&matches) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// A blob the test holds back: its stream waits halfway until [`Gate::open`].
#[derive(Debug, Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    pub fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

/// Faults and gates, per blob digest.
#[derive(Default)]
struct Faults {
    corrupt: HashSet<Digest>,
    gates: HashMap<Digest, Gate>,
    /// The next N GETs of a blob fail with a connection reset.
    failing_gets: HashMap<Digest, u32>,
    /// Errors the next uploads of a blob answer with, in order.
    upload_errors: HashMap<Digest, VecDeque<EndpointError>>,
}

/// A registry holding several in-memory repositories that mount from each
/// other by its rule.
pub struct MemoryHost {
    name: String,
    mount: MountWhen,
    setting: MountSetting,
    repositories: Mutex<HashMap<String, Weak<Memory>>>,
}

impl MemoryHost {
    pub fn new(name: &str, mount: MountWhen) -> Arc<Self> {
        Self::with_setting(name, mount, MountSetting::Enabled)
    }

    pub fn with_setting(name: &str, mount: MountWhen, setting: MountSetting) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            mount,
            setting,
            repositories: Mutex::new(HashMap::new()),
        })
    }

    /// A repository on this host, named `HOST/REPOSITORY` in the log.
    pub fn repository(self: &Arc<Self>, repository: &str, log: &Arc<Log>) -> Arc<Memory> {
        let memory = Arc::new(Memory {
            name: format!("{}/{repository}", self.name),
            log: log.clone(),
            manifests: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            host: Some((self.clone(), repository.to_owned())),
        });
        self.repositories
            .lock()
            .expect("repositories lock")
            .insert(repository.to_owned(), Arc::downgrade(&memory));
        memory
    }
}

/// An in-memory registry repository.
pub struct Memory {
    /// The host it is on, and its repository name there.
    host: Option<(Arc<MemoryHost>, String)>,
    name: String,
    log: Arc<Log>,
    /// Manifests by digest (`sha256:...`) and by tag.
    manifests: Mutex<HashMap<String, RawManifest>>,
    blobs: Mutex<HashMap<Digest, Bytes>>,
    faults: Mutex<Faults>,
}

impl Memory {
    pub fn new(name: &str, log: &Arc<Log>) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            log: log.clone(),
            manifests: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            host: None,
        })
    }

    /// Whether a pushed image manifest references the blob.
    fn committed(&self, digest: &Digest) -> bool {
        self.manifests
            .lock()
            .expect("manifests lock")
            .values()
            .any(|m| !m.is_index() && m.blobs().iter().any(|b| b.digest() == digest))
    }

    fn log(&self, op: Op) {
        self.log.push(&self.name, op);
    }

    /// Stores an image (every blob and manifest) and tags its root.
    pub fn seed(&self, image: &Image, tag: &str) {
        for (descriptor, bytes) in &image.blobs {
            self.blobs
                .lock()
                .expect("blobs lock")
                .insert(descriptor.digest().clone(), bytes.clone());
        }
        let mut manifests = self.manifests.lock().expect("manifests lock");
        for manifest in &image.manifests {
            manifests.insert(manifest.digest().to_string(), manifest.clone());
        }
        manifests.insert(tag.to_owned(), image.root.clone());
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs.lock().expect("blobs lock").contains_key(digest)
    }

    pub fn manifest(&self, reference: &str) -> Option<RawManifest> {
        self.manifests
            .lock()
            .expect("manifests lock")
            .get(reference)
            .cloned()
    }

    /// Every GET of this blob serves one byte flipped.
    pub fn corrupt(&self, digest: &Digest) {
        self.faults
            .lock()
            .expect("faults lock")
            .corrupt
            .insert(digest.clone());
    }

    /// Streams of this blob stop after their first half until the gate opens.
    pub fn hold(&self, digest: &Digest) -> Gate {
        let gate = Gate(Arc::new(Semaphore::new(0)));
        self.faults
            .lock()
            .expect("faults lock")
            .gates
            .insert(digest.clone(), gate.clone());
        gate
    }

    /// The next `times` GETs of this blob fail as a reset connection would.
    pub fn fail_gets(&self, digest: &Digest, times: u32) {
        self.faults
            .lock()
            .expect("faults lock")
            .failing_gets
            .insert(digest.clone(), times);
    }

    /// The next uploads of this blob fail with these errors, one each.
    pub fn refuse_uploads(&self, digest: &Digest, errors: Vec<EndpointError>) {
        self.faults
            .lock()
            .expect("faults lock")
            .upload_errors
            .insert(digest.clone(), errors.into());
    }
}

/// Logs `StreamDropped` when a source stream goes away before its end.
struct DropWatch {
    log: Arc<Log>,
    endpoint: String,
    digest: Digest,
    ended: bool,
}

impl DropWatch {
    fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.ended {
            self.log
                .push(&self.endpoint, Op::StreamDropped(self.digest.clone()));
        }
    }
}

#[async_trait]
impl Source for Memory {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn resolve(&self, reference: &str) -> Result<Option<Resolved>, EndpointError> {
        self.log(Op::Resolve(reference.to_owned()));
        Ok(self.manifest(reference).map(|m| Resolved {
            digest: m.digest().clone(),
            media_type: Some(m.media_type().to_owned()),
            size: Some(m.size()),
        }))
    }

    async fn manifest(&self, digest: &Digest) -> Result<RawManifest, EndpointError> {
        self.log(Op::GetManifest(digest.clone()));
        self.manifest(digest.as_ref()).ok_or_else(|| {
            EndpointError::Stream(StreamError::Source(
                format!("no manifest {digest} in {}", self.name).into(),
            ))
        })
    }

    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream, EndpointError> {
        let digest = descriptor.digest().clone();
        self.log(Op::GetBlob(digest.clone()));
        let (fail, corrupt, gate) = {
            let mut faults = self.faults.lock().expect("faults lock");
            let fail = match faults.failing_gets.get_mut(&digest) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            };
            (
                fail,
                faults.corrupt.contains(&digest),
                faults.gates.get(&digest).cloned(),
            )
        };
        if fail {
            return Err(EndpointError::Stream(StreamError::Source(
                "connection reset by peer".into(),
            )));
        }
        let mut bytes = self
            .blobs
            .lock()
            .expect("blobs lock")
            .get(&digest)
            .cloned()
            .expect("the test seeded every blob it asks for")
            .to_vec();
        if corrupt && let Some(first) = bytes.first_mut() {
            *first = !*first;
        }
        // Two chunks, a gate between them: a held transfer is mid-upload.
        let second = Bytes::from(bytes.split_off(bytes.len() / 2));
        let chunks = [Bytes::from(bytes), second];
        let watch = DropWatch {
            log: self.log.clone(),
            endpoint: self.name.clone(),
            digest,
            ended: false,
        };
        Ok(futures::stream::unfold(
            (0, chunks, gate, watch),
            |(i, chunks, gate, mut watch)| async move {
                if i == 1
                    && let Some(Gate(gate)) = &gate
                {
                    let _pass = gate.acquire().await.expect("gate semaphore");
                }
                match chunks.get(i).cloned() {
                    Some(chunk) => Some((Ok(chunk), (i + 1, chunks, gate, watch))),
                    None => {
                        watch.ended();
                        None
                    }
                }
            },
        )
        .boxed())
    }
}

#[async_trait]
impl Destination for Memory {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn ensure_repository(&self) -> Result<(), EndpointError> {
        self.log(Op::EnsureRepository);
        Ok(())
    }

    async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>, EndpointError> {
        self.log(Op::HeadManifest(reference.to_owned()));
        Ok(self.manifest(reference).map(|m| m.digest().clone()))
    }

    async fn blob_exists(&self, descriptor: &Descriptor) -> Result<bool, EndpointError> {
        self.log(Op::HeadBlob(descriptor.digest().clone()));
        Ok(self.has_blob(descriptor.digest()))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mount: self
                .host
                .as_ref()
                .map_or(MountWhen::Never, |(host, _)| host.mount),
            ..Capabilities::default()
        }
    }

    fn location(&self) -> Option<MountOrigin> {
        self.host.as_ref().map(|(host, repository)| MountOrigin {
            host: host.name.clone(),
            repository: repository.clone(),
        })
    }

    fn can_mount_from(&self, origin: &MountOrigin) -> bool {
        self.location()
            .is_some_and(|here| here.host == origin.host && here.repository != origin.repository)
    }

    async fn mount_setting(&self) -> MountSetting {
        self.host
            .as_ref()
            .map_or(MountSetting::Enabled, |(host, _)| host.setting.clone())
    }

    async fn mount_blob(
        &self,
        descriptor: &Descriptor,
        from: &MountOrigin,
    ) -> Result<Mount, EndpointError> {
        let digest = descriptor.digest().clone();
        let origin = self.host.as_ref().and_then(|(host, _)| {
            host.repositories
                .lock()
                .expect("repositories lock")
                .get(&from.repository)
                .and_then(Weak::upgrade)
        });
        let bytes = origin.as_ref().and_then(|origin| {
            let linked = origin
                .blobs
                .lock()
                .expect("blobs lock")
                .get(&digest)
                .cloned();
            let allowed = match self.capabilities().mount {
                MountWhen::Never => false,
                MountWhen::BlobLinked => true,
                MountWhen::ManifestCommitted => origin.committed(&digest),
            };
            linked.filter(|_| allowed)
        });
        match bytes {
            Some(bytes) => {
                self.blobs
                    .lock()
                    .expect("blobs lock")
                    .insert(digest.clone(), bytes);
                self.log(Op::Mounted {
                    digest,
                    from: from.repository.clone(),
                });
                Ok(Mount::Mounted)
            }
            None => {
                self.log(Op::MountRefused(digest));
                Ok(Mount::NotMounted(None))
            }
        }
    }

    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        mut body: BlobStream,
        _slot: Option<UploadSlot>,
    ) -> Result<(), EndpointError> {
        let digest = descriptor.digest().clone();
        self.log(Op::UploadStarted(digest.clone()));
        let refused = self
            .faults
            .lock()
            .expect("faults lock")
            .upload_errors
            .get_mut(&digest)
            .and_then(VecDeque::pop_front);
        if let Some(error) = refused {
            self.log(Op::UploadFailed(digest));
            return Err(error);
        }
        let mut received = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => received.extend_from_slice(&chunk),
                Err(error) => {
                    self.log(Op::UploadFailed(digest));
                    return Err(EndpointError::Stream(error));
                }
            }
        }
        assert_eq!(
            digest_of(&received),
            digest,
            "the engine handed a destination a complete body for bad content"
        );
        self.blobs
            .lock()
            .expect("blobs lock")
            .insert(digest.clone(), Bytes::from(received));
        self.log(Op::Committed(digest));
        Ok(())
    }

    async fn put_manifest(
        &self,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), EndpointError> {
        self.log(Op::PutManifest {
            reference: reference.to_owned(),
            digest: manifest.digest().clone(),
        });
        let mut manifests = self.manifests.lock().expect("manifests lock");
        manifests.insert(manifest.digest().to_string(), manifest.clone());
        manifests.insert(reference.to_owned(), manifest.clone());
        Ok(())
    }

    async fn finish(&self) -> Result<(), EndpointError> {
        self.log(Op::Finish);
        Ok(())
    }
}

// ---- images ------------------------------------------------------------------

/// An image made in memory: its root, every manifest, every blob.
#[derive(Debug, Clone)]
pub struct Image {
    pub root: RawManifest,
    pub manifests: Vec<RawManifest>,
    pub blobs: Vec<(Descriptor, Bytes)>,
}

/// A blob of `size` bytes made from `seed`, with its descriptor.
pub fn blob(seed: &str, size: usize) -> (Descriptor, Bytes) {
    let mut bytes = Vec::with_capacity(size);
    let mut i = 0u64;
    while bytes.len() < size {
        let block = digest_of(format!("{seed}-{i}").as_bytes());
        bytes.extend_from_slice(block.digest().as_bytes());
        i += 1;
    }
    bytes.truncate(size);
    let bytes = Bytes::from(bytes);
    let descriptor = Descriptor::new(
        mirror_oci::media_types::OCI_LAYER_GZIP.into(),
        size as u64,
        digest_of(&bytes),
    );
    (descriptor, bytes)
}

fn entry(descriptor: &Descriptor) -> serde_json::Value {
    serde_json::json!({
        "mediaType": descriptor.media_type().to_string(),
        "digest": descriptor.digest().to_string(),
        "size": descriptor.size(),
    })
}

fn parse(value: &serde_json::Value) -> RawManifest {
    RawManifest::parse(
        Bytes::from(serde_json::to_vec(value).expect("manifest JSON")),
        None,
    )
    .expect("a valid manifest")
}

/// An image manifest over a config (made from `seed`) and these layers.
pub fn image(seed: &str, layers: &[(Descriptor, Bytes)]) -> Image {
    let (config, config_bytes) = blob(&format!("{seed}-config"), 64);
    let config = Descriptor::new(
        mirror_oci::media_types::OCI_CONFIG.into(),
        config.size(),
        config.digest().clone(),
    );
    let root = parse(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mirror_oci::media_types::OCI_MANIFEST,
        "config": entry(&config),
        "layers": layers.iter().map(|(d, _)| entry(d)).collect::<Vec<_>>(),
    }));
    let mut blobs = vec![(config, config_bytes)];
    blobs.extend(layers.iter().cloned());
    Image {
        manifests: vec![root.clone()],
        root,
        blobs,
    }
}

/// An index over these children (each an image or an index), listed in this
/// order (the same child may be listed more than once).
pub fn index(children: &[(&Image, &str)]) -> Image {
    let root = parse(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mirror_oci::media_types::OCI_INDEX,
        "manifests": children.iter().map(|(child, platform)| {
            let mut value = entry(&child.root.descriptor());
            let (os, architecture) = platform.split_once('/').expect("os/arch");
            value["platform"] = serde_json::json!({"os": os, "architecture": architecture});
            value
        }).collect::<Vec<_>>(),
    }));
    let mut manifests = vec![root.clone()];
    let mut blobs = Vec::new();
    let mut seen = HashSet::new();
    for (child, _) in children {
        for manifest in &child.manifests {
            if seen.insert(manifest.digest().clone()) {
                manifests.push(manifest.clone());
            }
        }
        for blob in &child.blobs {
            if seen.insert(blob.0.digest().clone()) {
                blobs.push(blob.clone());
            }
        }
    }
    Image {
        root,
        manifests,
        blobs,
    }
}
