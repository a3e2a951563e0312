//! Media type strings for the manifest and layer formats the engine must tell apart.

/// Media type strings, Docker and OCI.
pub mod media_types {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";
}

/// Every manifest type the engine understands, for `Accept` on every manifest request.
///
/// Registries rewrite or refuse manifests whose stored type is missing from Accept
/// (distribution 404s OCI types and converts Docker v2 to schema1; ECR converts
/// tag pulls), which would change digests. Schema1 is listed so that it can be
/// detected and refused with a clear error instead of an opaque 404.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.5, \
application/vnd.docker.distribution.manifest.v1+json;q=0.5";

/// Whether a descriptor's media type marks a non-distributable ("foreign") layer.
pub fn is_foreign_layer(media_type: &str) -> bool {
    media_type == media_types::DOCKER_FOREIGN_LAYER
        || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
}
