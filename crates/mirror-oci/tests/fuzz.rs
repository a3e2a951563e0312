//! Fuzzing the parsers every untrusted input goes through first: image
//! references (command lines, config files, Dockerfiles) and manifests (any
//! registry or archive). Whatever the input: no panic, and what parses
//! behaves (a reference prints as one that parses back to it; a manifest's
//! digest is that of its bytes). A fixed case budget keeps the run short
//! and the same on every machine (`PROPTEST_CASES` raises it by hand).

use bytes::Bytes;
use mirror_oci::{MAX_MANIFEST_BYTES, ManifestError, RawManifest, Reference, digest_of};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- references

/// Strings made of the characters references are made of, plus a few that
/// they are not, so that most inputs get deep into the grammar.
fn reference_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z0-9]{1,8}",
        1 => "[A-Z]{1,3}",
        2 => Just("/".to_owned()),
        2 => Just(":".to_owned()),
        1 => Just("@".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just("-".to_owned()),
        1 => Just("_".to_owned()),
        1 => Just("__".to_owned()),
        1 => Just("localhost".to_owned()),
        1 => Just("docker.io".to_owned()),
        1 => Just("index.docker.io".to_owned()),
        1 => Just("docker://".to_owned()),
        1 => "[0-9]{1,6}",
        1 => "sha256:[0-9a-f]{64}",
        1 => "sha512:[0-9a-f]{0,128}",
        1 => "[ \t\u{e9}\u{1F600}\u{0}]",
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// Everything that must hold of a reference that parsed.
fn check_reference(input: &str, parsed: &Reference) -> Result<(), TestCaseError> {
    // None of these may panic.
    let _ = (
        parsed.api_host(),
        parsed.is_docker_hub(),
        parsed.reference_str(),
        parsed.name(),
        parsed.familiar_name(),
    );
    prop_assert!(parsed.tag().is_some() || parsed.digest().is_some());
    let printed = parsed.to_string();
    let again: Reference = printed
        .parse()
        .map_err(|e| TestCaseError::fail(format!("{input:?} printed as {printed:?}: {e}")))?;
    prop_assert_eq!(again.registry(), parsed.registry(), "{:?}", input);
    prop_assert_eq!(again.repository(), parsed.repository(), "{:?}", input);
    prop_assert_eq!(again.tag(), parsed.tag(), "{:?}", input);
    prop_assert_eq!(again.digest(), parsed.digest(), "{:?}", input);
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_string_parses_as_a_reference_or_is_refused(input in any::<String>()) {
        if let Ok(parsed) = input.parse::<Reference>() {
            check_reference(&input, &parsed)?;
        }
    }

    #[test]
    fn reference_like_strings_parse_back_from_what_they_print(input in reference_like()) {
        match input.parse::<Reference>() {
            Ok(parsed) => check_reference(&input, &parsed)?,
            // The refusal names what was given (less a `docker://`).
            Err(e) => {
                let given = input.trim();
                let given = given.strip_prefix("docker://").unwrap_or(given);
                prop_assert!(e.to_string().contains(given), "{} does not name {:?}", e, given);
            }
        }
    }
}

// ---------------------------------------------------------------- manifests

fn media_type() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just("application/vnd.oci.image.index.v1+json".to_owned()),
        Just("application/vnd.oci.image.manifest.v1+json".to_owned()),
        Just("application/vnd.docker.distribution.manifest.list.v2+json".to_owned()),
        Just("application/vnd.docker.distribution.manifest.v2+json".to_owned()),
        Just("application/vnd.docker.distribution.manifest.v1+prettyjws".to_owned()),
        Just("application/json; charset=utf-8".to_owned()),
        Just("application/octet-stream".to_owned()),
        Just("text/plain".to_owned()),
        Just(";".to_owned()),
        Just(String::new()),
        "[a-z/.+;= -]{0,40}",
    ])
}

/// A JSON value where a manifest has a digest: valid, another algorithm,
/// truncated, or not a string.
fn digest_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[0-9a-f]{64}".prop_map(|hex| json!(format!("sha256:{hex}"))),
        1 => "[0-9a-f]{128}".prop_map(|hex| json!(format!("sha512:{hex}"))),
        1 => "[0-9a-f]{32}".prop_map(|hex| json!(format!("md5:{hex}"))),
        1 => "[0-9a-f]{0,70}".prop_map(|hex| json!(format!("sha256:{hex}"))),
        1 => "[a-zA-Z0-9+._:=-]{0,80}".prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(Value::from),
    ]
}

fn size_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..10_000_000).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        1 => Just(json!("12")),
        1 => Just(Value::Null),
    ]
}

fn descriptor_value() -> impl Strategy<Value = Value> {
    (
        media_type(),
        digest_value(),
        size_value(),
        proptest::option::of(("[a-z0-9]{0,8}", "[a-z0-9]{0,8}")),
        proptest::option::of(proptest::collection::vec("[a-z:./]{0,12}", 0..3)),
        any::<bool>(),
    )
        .prop_map(|(media_type, digest, size, platform, urls, annotate)| {
            let mut d = json!({ "digest": digest, "size": size });
            if let Some(m) = media_type {
                d["mediaType"] = json!(m);
            }
            if let Some((os, architecture)) = platform {
                d["platform"] = json!({ "os": os, "architecture": architecture });
            }
            if let Some(urls) = urls {
                d["urls"] = json!(urls);
            }
            if annotate {
                d["annotations"] = json!({ "org.opencontainers.image.ref.name": "latest" });
            }
            d
        })
}

/// Manifest-shaped JSON: indexes, images, schema1, and objects that are a
/// little of each.
fn manifest_value() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(prop_oneof![
            Just(json!(2)),
            Just(json!(1)),
            Just(json!("2"))
        ]),
        media_type(),
        proptest::option::of(proptest::collection::vec(descriptor_value(), 0..4)),
        proptest::option::of(descriptor_value()),
        proptest::option::of(proptest::collection::vec(descriptor_value(), 0..4)),
        proptest::option::of(descriptor_value()),
    )
        .prop_map(|(schema, media_type, manifests, config, layers, subject)| {
            let mut m = json!({});
            if let Some(s) = schema {
                m["schemaVersion"] = s;
            }
            if let Some(t) = media_type {
                m["mediaType"] = json!(t);
            }
            if let Some(v) = manifests {
                m["manifests"] = json!(v);
            }
            if let Some(v) = config {
                m["config"] = v;
            }
            if let Some(v) = layers {
                m["layers"] = json!(v);
            }
            if let Some(v) = subject {
                m["subject"] = v;
            }
            m
        })
}

/// Bytes of manifest-shaped JSON, sometimes cut or with a byte changed.
fn manifest_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        manifest_value(),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        0u8..4,
    )
        .prop_map(|(value, at, cut, byte, damage)| {
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            if bytes.is_empty() {
                return bytes;
            }
            match damage {
                0 => {
                    let i = usize::from(at) % bytes.len();
                    bytes[i] = byte;
                }
                1 => bytes.truncate(usize::from(cut) % bytes.len()),
                _ => {}
            }
            bytes
        })
}

/// Everything that must hold of a manifest that parsed.
fn check_manifest(bytes: &[u8], manifest: &RawManifest) -> Result<(), TestCaseError> {
    prop_assert_eq!(manifest.digest(), &digest_of(bytes));
    prop_assert_eq!(manifest.size(), bytes.len() as u64);
    prop_assert_eq!(manifest.bytes().as_ref(), bytes);
    let children = manifest.children().len();
    let blobs = manifest.blobs().len();
    prop_assert!(children == 0 || blobs == 0, "an index with blobs");
    prop_assert!(manifest.is_index() || children == 0);
    let descriptor = manifest.descriptor();
    prop_assert_eq!(descriptor.digest(), manifest.digest());
    Ok(())
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn any_bytes_parse_as_a_manifest_or_are_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        content_type in media_type(),
    ) {
        if let Ok(manifest) = RawManifest::parse(Bytes::from(bytes.clone()), content_type.as_deref()) {
            check_manifest(&bytes, &manifest)?;
        }
    }

    #[test]
    fn manifest_shaped_json_parses_or_is_refused(
        bytes in manifest_bytes(),
        content_type in media_type(),
    ) {
        let parsed = RawManifest::parse(Bytes::from(bytes.clone()), content_type.as_deref());
        if let Ok(manifest) = &parsed {
            check_manifest(&bytes, manifest)?;
        }
        // Verified against its own digest, the same answer; against another, refused.
        let digest = digest_of(&bytes);
        let verified = RawManifest::parse_verified(Bytes::from(bytes.clone()), content_type.as_deref(), &digest);
        prop_assert_eq!(verified.is_ok(), parsed.is_ok());
        let other = digest_of(b"another manifest");
        let refused = RawManifest::parse_verified(Bytes::from(bytes), content_type.as_deref(), &other);
        let mismatch = matches!(refused, Err(ManifestError::DigestMismatch { .. }));
        prop_assert!(mismatch);
    }
}

/// Memory is bounded by the size cap, whatever the body claims, and nesting
/// deep enough to overflow a recursive parser's stack is refused.
#[test]
fn oversized_and_deeply_nested_manifests_are_refused() {
    let big = Bytes::from(vec![b' '; MAX_MANIFEST_BYTES + 1]);
    assert!(matches!(
        RawManifest::parse(big.clone(), None),
        Err(ManifestError::TooLarge { .. })
    ));
    assert!(matches!(
        RawManifest::parse_verified(big.clone(), None, &digest_of(&big)),
        Err(ManifestError::TooLarge { .. })
    ));
    for open in ["[", "{\"a\":", "{\"manifests\":["] {
        let mut deep = open.repeat(MAX_MANIFEST_BYTES / open.len() / 2);
        deep.push_str(&"]".repeat(8));
        assert!(RawManifest::parse(Bytes::from(deep), None).is_err());
    }
}
