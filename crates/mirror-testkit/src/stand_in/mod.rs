//! Stand-ins for Amazon ECR and Docker Hub: real registries behind a gate
//! that gives them the manners of the real services.
//!
//! The engine must reach a stand-in through the same code path it uses for
//! the real service, with only an endpoint mapping for the registry host
//! (`--registry-endpoint HOST=http://127.0.0.1:PORT`). So the stand-ins keep
//! the real host names and put the behaviour that matters to a copier in a
//! small HTTP/1.1 reverse proxy of their own, the gate:
//!
//! - [`EcrStandIn`]: moto ([`Moto`]) is the control plane; a distribution
//!   registry with htpasswd user `AWS` and the password moto's
//!   GetAuthorizationToken decodes to is the data plane. The gate answers
//!   `NAME_UNKNOWN` for repositories moto does not know, `TAG_INVALID` for a
//!   tag push to an immutable repository whose tag exists (even with the same
//!   digest), 201 to PATCH, 429 `TOOMANYREQUESTS` above a manifest PUT rate,
//!   400 to a tag list page size `n` above 1000,
//!   404 to GET on an upload session, drops cross-repository mount requests
//!   unless blob mounting is on, omits `Location` on manifest PUTs, and tells
//!   moto about every pushed manifest (PutImage) so DescribeImages agrees.
//!   ECR keeps referrers itself: the gate answers a manifest PUT naming a
//!   `subject` with `OCI-Subject` and serves the referrers API
//!   ([`ReferrersApi`], module `referrers`).
//! - [`DockerHubStandIn`]: a bearer-token registry (service
//!   `registry.docker.io`, anonymous pull) whose manifest GETs carry
//!   `ratelimit-limit` / `ratelimit-remaining` and run out (429), and whose
//!   blob GETs redirect (307) to a presigned-URL "CDN" that refuses an
//!   `Authorization` header, as S3 does.
//!
//! Between the gate and the registry sits a testkit [`Proxy`]
//! ([`EcrStandIn::faults`]): its rules inject faults behind the gate's
//! manners. The gate records every request it gets as a [`RequestRecord`].
//!
//! Modules: `gate` (the proxy, its records and routes), `ecr` (ECR's
//! manners), `docker_hub` (Docker Hub's manners and the CDN).
//!
//! ```no_run
//! use mirror_testkit::{EcrOptions, EcrStandIn, ImageSpec, Moto, PushTarget};
//! # async fn demo() -> anyhow::Result<()> {
//! let moto = Moto::start().await?;
//! let ecr = EcrStandIn::start(&moto, EcrOptions::default()).await?;
//! moto.create_repository("team/app", "IMMUTABLE").await?;
//! // Seed or check through the gate with ECR's credentials...
//! let image = mirror_testkit::generate(&ImageSpec::small("demo", 1))?;
//! let target = PushTarget::new(&ecr.host(), "team/app", "v1").with_auth(ecr.auth());
//! mirror_testkit::push_layout(&image, &target).await?;
//! // ...and run `mirror` with moto's environment and the endpoint mapping:
//! // mirror copy ... --registry-endpoint {ecr.endpoint_arg()}   envs: moto.env()
//! assert_eq!(moto.describe_images("team/app").await?.len(), 3);
//! # Ok(()) }
//! ```

mod docker_hub;
mod ecr;
mod gate;
mod referrers;

pub use docker_hub::{DOCKER_HUB_HOST, DockerHubOptions, DockerHubStandIn};
pub use ecr::{EcrOptions, EcrStandIn};
pub use referrers::ReferrersApi;
