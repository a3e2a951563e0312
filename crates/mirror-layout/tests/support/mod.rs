//! What the engine-driven tests of this crate share: an engine that tries a
//! blob once, a copy request, and errors as the binary prints them.

use std::path::Path;
use std::sync::Arc;

use mirror_engine::{CopyOptions, CopyRequest, Destination, Engine, EngineOptions, Silent, Source};

/// An engine that tries each blob once: a failure shows at once.
pub fn engine() -> Engine {
    Engine::new(
        EngineOptions {
            blob_attempts: 1,
            ..EngineOptions::default()
        },
        Arc::new(Silent),
    )
}

/// A request with the default options, labelled by the endpoints' names.
pub fn request(
    source: Arc<dyn Source>,
    source_reference: &str,
    destination: Arc<dyn Destination>,
    destination_reference: &str,
) -> CopyRequest {
    CopyRequest {
        source_label: source.name(),
        destination_label: destination.name(),
        source,
        source_reference: source_reference.to_owned(),
        destination,
        destination_reference: destination_reference.to_owned(),
        options: CopyOptions::default(),
    }
}

/// An error and every cause under it, as one line (each error says only its
/// own part; the causes are its sources): what the binary prints.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn copy_dir(from: &Path, to: &Path) {
    mirror_testkit::copy_dir(from, to).expect("copying a layout");
}
