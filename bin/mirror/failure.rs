//! How a failure reaches the user: one `error:` line, the chain of causes as
//! `cause:` lines (each error says only its own part), `hint:` lines that
//! name the flags and commands that fix it (library errors name none), and
//! an exit code chosen from what kind of error it is. `mirror-sync`'s errors
//! are typed too: a tag's [`mirror_sync::RunError`] has the engine's error as
//! its source, and the front end in `jobs.rs` adds the hints that depend on
//! which command (flags or sync-file keys) was run.

use std::error::Error;
use std::fmt;

use mirror_ecr::{EcrError, SettingsError};
use mirror_engine::{CopyError, EndpointError, GaveUp, Limit, Side};
use mirror_layout::LayoutError;
use mirror_registry::{AuthFailure, ErrorCode, Operation, RegistryError, TransportKind};
use mirror_signature::KeyError;
use mirror_sync::{ErrorKind, FileError, LocationError, SyncError};
use serde_json::json;

/// What kind of failure ended the run; its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Exit {
    /// Something was copied wrong or not at all: 1.
    Transfer,
    /// The request cannot be carried out as asked (bad reference, flag,
    /// configuration); nothing was tried: 2.
    Usage,
    /// Nothing failed, but images were deferred by the source pull budget
    /// (nothing of them half-written; the next run picks them up): 3.
    Deferred,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Transfer => 1,
            Self::Usage => 2,
            Self::Deferred => 3,
        }
    }

    /// The kind of a typed error, from the first link of its chain that
    /// says it is a usage error.
    pub fn of(error: &(dyn Error + 'static)) -> Self {
        let usage = chain(error).any(|link| {
            typed(link).into_iter().any(|e| {
                e.downcast_ref::<CopyError>()
                    .is_some_and(CopyError::is_usage)
                    || e.is::<mirror_oci::ReferenceError>()
                    || e.is::<mirror_oci::PlatformParseError>()
                    || e.is::<KeyError>()
                    || matches!(
                        e.downcast_ref::<LayoutError>(),
                        Some(
                            LayoutError::InvalidLocation { .. }
                                | LayoutError::InvalidTag { .. }
                                | LayoutError::InvalidRepoTag { .. }
                        )
                    )
                    || matches!(e.downcast_ref::<EcrError>(), Some(EcrError::Settings(_)))
                    || matches!(
                        e.downcast_ref::<RegistryError>(),
                        Some(RegistryError::Setup(_))
                    )
                    || e.downcast_ref::<mirror_sync::BundleError>()
                        .is_some_and(mirror_sync::BundleError::is_usage)
                    || e.is::<FileError>()
                    || e.is::<LocationError>()
                    || e.downcast_ref::<SyncError>()
                        .is_some_and(|s| s.kind() == ErrorKind::Usage)
            })
        });
        if usage { Self::Usage } else { Self::Transfer }
    }
}

/// A failure: what the binary says failed, and the typed error behind it.
pub(crate) struct Failure {
    pub exit: Exit,
    /// The `error:` line.
    pub message: String,
    /// The typed error whose chain follows as `cause:` lines (its own
    /// message is `message` unless context was added).
    error: Option<Box<dyn Error + Send + Sync + 'static>>,
    /// Whether `message` is the binary's context rather than the error's own.
    context: bool,
    /// Hints the binary knows from where it failed, before the typed ones.
    extra_hints: Vec<String>,
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("exit", &self.exit)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl Failure {
    /// A usage error in the binary's own words (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            message: message.into(),
            error: None,
            context: false,
            extra_hints: Vec::new(),
        }
    }

    /// A transfer failure in the binary's own words (exit 1).
    pub fn transfer(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Transfer,
            message: message.into(),
            error: None,
            context: false,
            extra_hints: Vec::new(),
        }
    }

    /// Nothing failed, but images were left for the next run (exit 3).
    pub fn deferred(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Deferred,
            ..Self::transfer(message)
        }
    }

    /// A typed error; its kind decides the exit code.
    pub fn from_error(error: impl Error + Send + Sync + 'static) -> Self {
        Self {
            exit: Exit::of(&error),
            message: error.to_string(),
            error: Some(Box::new(error)),
            context: false,
            extra_hints: Vec::new(),
        }
    }

    /// Adds a hint only the binary knows (what to run instead).
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.extra_hints.push(hint.into());
        self
    }

    /// Puts the binary's words first (`source ghcr.io/org/app`); the error's
    /// own message becomes the first cause.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        if self.error.is_some() && !self.context {
            self.context = true;
        } else {
            // No typed error: the old message goes under the new one as a cause.
            let message = std::mem::take(&mut self.message);
            self.error = Some(Box::new(Message(message)));
            self.context = true;
        }
        self.message = context.into();
        self
    }

    /// The error's causes, outermost first (the error's own message first
    /// when the binary added context).
    pub fn causes(&self) -> Vec<String> {
        let Some(error) = self.error.as_deref() else {
            return Vec::new();
        };
        let error: &(dyn Error + 'static) = error;
        let skip = usize::from(!self.context);
        let mut causes: Vec<String> = Vec::new();
        for link in chain(error).skip(skip) {
            let text = link.to_string();
            if text.is_empty() || causes.last() == Some(&text) || text == self.message {
                continue;
            }
            causes.push(text);
        }
        causes
    }

    /// What to do about it: flags and commands, keyed by the error's types.
    pub fn hints(&self) -> Vec<String> {
        let mut all = self.extra_hints.clone();
        if let Some(error) = self.error.as_deref() {
            for hint in hints(error) {
                if !all.contains(&hint) {
                    all.push(hint);
                }
            }
        }
        all
    }

    /// Prints the failure to stderr, its first line after `prefix` if any.
    pub fn print(&self, prefix: Option<&str>) {
        let mut out = String::new();
        let first = match prefix {
            Some(prefix) => format!("{prefix}: {}", self.message),
            None => self.message.clone(),
        };
        push_lines(&mut out, "error: ", &first);
        for cause in self.causes() {
            push_lines(&mut out, "  cause: ", &cause);
        }
        for hint in self.hints() {
            push_lines(&mut out, "  hint: ", &hint);
        }
        eprint!("{out}");
    }

    /// The failure for `--json`: `error`, `causes`, `hints`.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "error": self.message,
            "causes": self.causes(),
            "hints": self.hints(),
        })
    }
}

impl<E: Error + Send + Sync + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::from_error(error)
    }
}

/// Text that stands in for an error (an old message under new context).
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

/// Appends `text` with `label` before its first line and the later lines
/// indented under it.
fn push_lines(out: &mut String, label: &str, text: &str) {
    let indent = " ".repeat(label.len());
    for (i, line) in text.lines().enumerate() {
        out.push_str(if i == 0 { label } else { &indent });
        out.push_str(line);
        out.push('\n');
    }
}

/// An error and its sources, outermost first.
fn chain<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> + 'a {
    std::iter::successors(Some(error), |e: &&'a (dyn Error + 'static)| (*e).source())
}

/// A link of the chain and the typed errors it wraps transparently (whose
/// `source()` skips them): an endpoint error's registry or backend error, a
/// shared copy error's own, a boxed registry or layout error, the ECR error
/// of a sync error.
fn typed<'a>(link: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut found = vec![link];
    let mut i = 0;
    while i < found.len() {
        let e = found[i];
        if let Some(endpoint) = e.downcast_ref::<EndpointError>() {
            found.push(match endpoint {
                EndpointError::Registry(inner) => inner,
                EndpointError::Manifest(inner) => inner,
                EndpointError::Stream(inner) => inner,
                EndpointError::Backend(inner) => inner.as_ref(),
                EndpointError::Io { .. } => {
                    i += 1;
                    continue;
                }
            });
        } else if let Some(boxed) = e.downcast_ref::<Box<RegistryError>>() {
            // A boxed source (the last failure after retries) is a `Box` in the chain.
            found.push(boxed.as_ref());
        } else if let Some(CopyError::Shared(inner)) = e.downcast_ref::<CopyError>() {
            found.push(inner.as_ref());
        } else if let Some(LayoutError::Endpoint(inner)) = e.downcast_ref::<LayoutError>() {
            found.push(inner);
        } else if let Some(boxed) = e.downcast_ref::<Box<LayoutError>>() {
            found.push(boxed.as_ref());
        } else if let Some(SyncError::Aws(inner)) = e.downcast_ref::<SyncError>() {
            found.push(inner);
        }
        i += 1;
    }
    found
}

/// Every hint the chain's typed errors call for, each once.
fn hints(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut side = None;
    let mut hints: Vec<String> = Vec::new();
    for link in chain(error) {
        for e in typed(link) {
            let found = if let Some(copy) = e.downcast_ref::<CopyError>() {
                match copy {
                    CopyError::Endpoint { side: s, .. } | CopyError::Blob { side: s, .. } => {
                        side = Some(*s);
                    }
                    _ => {}
                }
                copy_hint(copy)
            } else if let Some(registry) = e.downcast_ref::<RegistryError>() {
                registry_hint(registry, side)
            } else if let Some(ecr) = e.downcast_ref::<EcrError>() {
                ecr_hint(ecr)
            } else if let Some(layout) = e.downcast_ref::<LayoutError>() {
                layout_hint(layout)
            } else if let Some(key) = e.downcast_ref::<KeyError>() {
                key_hint(key)
            } else {
                None
            };
            if let Some(hint) = found
                && !hints.contains(&hint)
            {
                hints.push(hint);
            }
        }
    }
    hints
}

fn copy_hint(error: &CopyError) -> Option<String> {
    Some(match error {
        CopyError::NotFound { reference } => format!(
            "check the tag or digest (`mirror inspect {reference}` shows what a reference resolves to)"
        ),
        CopyError::Blob {
            side: Side::Source,
            source,
            ..
        } if source.stream_error().is_some_and(|e| !e.is_transient()) => {
            "the source served content that does not match its digest; nothing referencing it was pushed"
                .to_owned()
        }
        CopyError::Blob {
            gave_up: GaveUp::RetryAfter { .. },
            ..
        } => "raise --max-retry-after SECONDS if waiting that long is fine, or run the copy again later"
            .to_owned(),
        CopyError::Blob {
            gave_up: GaveUp::Attempts,
            ..
        } => "run the copy again later (what landed is kept and skipped), or raise --retries".to_owned(),
        CopyError::SinglePlatform { platforms, .. } => format!(
            "choose one with --platform {}",
            platforms.first().map_or("OS/ARCH", String::as_str)
        ),
        CopyError::Limit {
            limit: Limit::Manifests(_),
            ..
        } => "if the source is trusted, raise --max-manifests".to_owned(),
        CopyError::Unsigned { .. } => {
            "sign it by digest with `cosign sign` and the private key of one of these public keys, or pass --require-signature cosign:KEY.pub for the key that signed it"
                .to_owned()
        }
        _ => return None,
    })
}

/// The credentials flag for a side (`--src-creds` or `--dest-creds`).
fn creds_flag(side: Option<Side>) -> &'static str {
    match side {
        Some(Side::Source) => "--src-creds",
        Some(Side::Destination) => "--dest-creds",
        None => "--src-creds/--dest-creds",
    }
}

fn registry_hint(error: &RegistryError, side: Option<Side>) -> Option<String> {
    Some(match error {
        RegistryError::Api {
            status,
            code,
            operation,
            host,
            ..
        } => match (*status, code.as_ref()) {
            (_, Some(ErrorCode::Unauthorized)) | (401, _) => format!(
                "the registry wants credentials: pass {} USER:PASSWORD, or log in with `docker login {host}`",
                creds_flag(side)
            ),
            (_, Some(ErrorCode::Denied)) | (403, _) => {
                "the credentials are valid but lack permission for this repository and action"
                    .to_owned()
            }
            (_, Some(ErrorCode::NameUnknown)) => {
                "the repository does not exist on this registry: check the name, or create it first"
                    .to_owned()
            }
            (_, Some(ErrorCode::ManifestUnknown)) if *operation != Operation::PutManifest => {
                "no manifest with that tag or digest: check it with `mirror inspect`".to_owned()
            }
            (_, Some(ErrorCode::TagInvalid)) => {
                "the tag exists in an immutable repository and cannot be overwritten".to_owned()
            }
            (_, Some(ErrorCode::ManifestBlobUnknown)) => {
                "the registry does not hold a blob this manifest references".to_owned()
            }
            (_, Some(ErrorCode::TooManyRequests)) | (429, _) => {
                "the registry is throttling requests: lower --max-concurrent-blobs, or run the copy again later"
                    .to_owned()
            }
            _ => return None,
        },
        RegistryError::RateLimited { host, .. } if host == "registry-1.docker.io" => {
            "Docker Hub's pull limit is reached: log in (`docker login` or --src-creds) for a higher limit, or wait"
                .to_owned()
        }
        RegistryError::RateLimited { .. } => {
            "wait and run the copy again, or raise --max-retry-after SECONDS".to_owned()
        }
        RegistryError::Auth { host, failure, .. } => match failure {
            AuthFailure::NoCredentials => format!(
                "pass {} USER:PASSWORD, or run `docker login {host}`",
                creds_flag(side)
            ),
            AuthFailure::Refused => format!(
                "check the username and password or token ({}, `docker login {host}`); valid credentials may also lack permission for this repository and action",
                creds_flag(side)
            ),
            AuthFailure::PlainHttpTokenServer => format!(
                "use an HTTPS token server, or pass --insecure-registry {host} if this is a test setup"
            ),
            AuthFailure::TokenServer => {
                "check the registry's auth configuration, or run the copy again later".to_owned()
            }
            AuthFailure::OtherHost => {
                "the registry (or a proxy in front of it) hands out locations on a host it does not serve from: check its external URL setting, or reach it directly".to_owned()
            }
        },
        RegistryError::Storage { .. } => {
            "a presigned URL expired or was refused: run the copy again (a fresh request gets a fresh URL), and check this machine's clock".to_owned()
        }
        RegistryError::Transport {
            kind: TransportKind::Tls,
            host,
            ..
        } => format!(
            "if {host} serves plain HTTP, pass --insecure-registry {host}; if its certificate comes from a private CA, pass --ca-cert FILE"
        ),
        RegistryError::Transport {
            kind: TransportKind::Connect,
            host,
            ..
        } => format!(
            "check that {host} is up and reachable from here; --registry-endpoint {host}=URL reaches it through another address"
        ),
        _ => return None,
    })
}

fn ecr_hint(error: &EcrError) -> Option<String> {
    Some(match error {
        EcrError::AccessDenied { action, .. } => format!(
            "grant `{action}` to the caller (`mirror iam-policy --push REPO` prints a least-privilege policy)"
        ),
        EcrError::NotCreating { .. } => {
            "create the repository first, or run without --no-create".to_owned()
        }
        EcrError::ImmutableTag { .. } => {
            "push under a new tag (a new destination tag, or --to NAME:TAG), or make the repository mutable"
                .to_owned()
        }
        EcrError::Settings(settings) => match settings {
            SettingsError::UnknownTagMutability(_)
            | SettingsError::NoExclusions(_)
            | SettingsError::UnusedExclusions => {
                "--tag-mutability MODE sets the mode; --tag-mutability-exclusion FILTER (repeatable) the tags excluded from a *_WITH_EXCLUSION mode"
                    .to_owned()
            }
            SettingsError::UnknownEncryption(_) | SettingsError::KmsKeyWithoutKms => {
                "--encryption AES256|KMS|KMS_DSSE; --kms-key ARN only with KMS or KMS_DSSE"
                    .to_owned()
            }
            SettingsError::Refused { .. } => return None,
        },
        _ => return None,
    })
}

fn key_hint(error: &KeyError) -> Option<String> {
    Some(match error {
        KeyError::Spec(_) | KeyError::Read { .. } | KeyError::NoPublicKey { .. } => {
            "--require-signature cosign:KEY.pub names the public key file `cosign generate-key-pair` writes (repeatable: any of the keys may match)"
                .to_owned()
        }
        KeyError::Private { path } => format!(
            "give the public key: the cosign.pub beside it, or what `cosign public-key` prints for {}",
            path.display()
        ),
        KeyError::Unsupported { .. } => {
            "cosign's key-based signatures use ECDSA P-256 keys".to_owned()
        }
    })
}

fn layout_hint(error: &LayoutError) -> Option<String> {
    Some(match error {
        LayoutError::NotALayout { .. } => {
            "point at the directory that holds oci-layout, index.json and blobs/ (for a writable destination: a new or empty directory)"
                .to_owned()
        }
        LayoutError::HostileEntry { .. } => {
            "this archive was not written by an OCI tool or was tampered with; nothing was extracted"
                .to_owned()
        }
        LayoutError::MissingBlob { .. } => {
            "the layout is incomplete; copy the image into it again".to_owned()
        }
        LayoutError::SizeMismatch { .. } => {
            "the layout is damaged; copy the image into it again".to_owned()
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gave_up_after_500s() -> CopyError {
        let last = RegistryError::Api {
            host: "r.example".into(),
            operation: Operation::GetBlob,
            target: "r.example/app@sha256:ab".into(),
            status: 500,
            code: None,
            message: "disk on fire".into(),
            retry_after: None,
        };
        let exhausted = RegistryError::RetriesExhausted {
            host: "r.example".into(),
            operation: Operation::GetBlob,
            target: "r.example/app@sha256:ab".into(),
            attempts: 5,
            elapsed: std::time::Duration::from_millis(4900),
            last: Box::new(last),
        };
        CopyError::Endpoint {
            side: Side::Source,
            name: "r.example/app".into(),
            source: EndpointError::Registry(exhausted),
        }
    }

    /// Regression (issue 10.7): after retries the final error said only
    /// "gave up after 5 attempts"; the 500's body was in earlier WARN lines.
    #[test]
    fn the_last_failure_after_retries_is_a_cause() {
        let failure = Failure::from_error(gave_up_after_500s());
        assert_eq!(failure.message, "source r.example/app failed");
        assert_eq!(
            failure.causes(),
            [
                "fetching blob r.example/app@sha256:ab on r.example: gave up after 5 attempts in 4.9s",
                "fetching blob r.example/app@sha256:ab on r.example: 500: disk on fire",
            ]
        );
        assert_eq!(failure.exit, Exit::Transfer);
        let json = failure.json();
        assert_eq!(
            json["causes"][1],
            "fetching blob r.example/app@sha256:ab on r.example: 500: disk on fire"
        );
    }

    #[test]
    fn context_puts_the_error_under_the_binarys_words() {
        let failure = Failure::from_error(gave_up_after_500s()).context("a -> b");
        assert_eq!(failure.message, "a -> b");
        assert_eq!(failure.causes()[0], "source r.example/app failed");
        assert_eq!(failure.causes().len(), 3);
    }

    #[test]
    fn hints_follow_the_side_that_failed() {
        let refused = |side| CopyError::Endpoint {
            side,
            name: "r.example/app".into(),
            source: EndpointError::Registry(RegistryError::Auth {
                host: "r.example".into(),
                detail: "refused".into(),
                failure: AuthFailure::NoCredentials,
            }),
        };
        let source = Failure::from_error(refused(Side::Source)).hints();
        assert_eq!(
            source,
            ["pass --src-creds USER:PASSWORD, or run `docker login r.example`"]
        );
        let destination = Failure::from_error(refused(Side::Destination)).hints();
        assert!(
            destination[0].starts_with("pass --dest-creds"),
            "{destination:?}"
        );
    }

    #[test]
    fn a_bad_signature_key_is_a_usage_error_with_a_hint() {
        let failure = Failure::from_error(KeyError::Private {
            path: "cosign.key".into(),
        });
        assert_eq!(failure.exit, Exit::Usage);
        assert_eq!(
            failure.message,
            "cosign.key is a private key, not a public one"
        );
        assert_eq!(
            failure.hints(),
            [
                "give the public key: the cosign.pub beside it, or what `cosign public-key` prints for cosign.key"
            ]
        );
    }

    #[test]
    fn an_unsigned_image_is_a_transfer_failure_whose_hint_names_the_flag() {
        let failure = Failure::from_error(CopyError::Unsigned {
            reference: "r.example/app:1".into(),
            digest: mirror_oci::digest_of(b"app"),
            keys: vec!["cosign.pub".into()],
            reasons: vec!["no cosign signature found".into()],
        });
        assert_eq!(failure.exit, Exit::Transfer);
        assert!(
            failure.message.contains("\n  - no cosign signature found"),
            "{}",
            failure.message
        );
        assert!(!failure.message.contains("hint"), "{}", failure.message);
        assert!(
            failure.hints()[0].contains("--require-signature"),
            "{:?}",
            failure.hints()
        );
    }

    #[test]
    fn usage_errors_are_known_by_type_wherever_they_sit() {
        let shared = CopyError::Shared(std::sync::Arc::new(CopyError::SinglePlatform {
            destination: "docker-archive:x.tar".into(),
            reference: "app:1".into(),
            platforms: vec!["linux/amd64".into()],
        }));
        assert_eq!(Exit::of(&shared), Exit::Usage);
        assert_eq!(Exit::of(&gave_up_after_500s()), Exit::Transfer);
        let bad: Result<mirror_oci::Reference, _> = "Bad/Name".parse();
        assert_eq!(Exit::of(&bad.expect_err("uppercase")), Exit::Usage);
    }
}
