//! What a copy must have left at its destination (registry or archive),
//! checked after every run, and the archive both tools import from.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use mirror_testkit::{GeneratedImage, PushAuth, Registry};
use serde_json::Value;

use crate::REF_NAME;
use crate::scenarios::Corpus;

/// Empties the destination registry, and checks that it is empty for clients.
pub(crate) async fn wipe(destination: &Registry, corpus: &Corpus) -> anyhow::Result<()> {
    destination.wipe_storage()?;
    // The registry keeps no blob descriptor cache (none configured): what was
    // wiped must be gone for clients too.
    if let Some(blob) = corpus.image.blobs.first()
        && mirror_testkit::blob_exists(
            &destination.host(),
            corpus.repo,
            blob.digest(),
            &PushAuth::Anonymous,
        )
        .await?
    {
        bail!(
            "the destination still serves {} after wipe_storage",
            blob.digest()
        );
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (`FILE.partial`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes an archive and what a write of it may have left beside it.
pub(crate) fn remove_archive(path: &Path) -> anyhow::Result<()> {
    for leftover in [
        path.to_owned(),
        with_suffix(path, ".tmp"),
        with_suffix(path, ".partial"),
    ] {
        let removed = if leftover.is_dir() {
            std::fs::remove_dir_all(&leftover)
        } else {
            std::fs::remove_file(&leftover)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", leftover.display())),
        }
    }
    Ok(())
}

/// Writes a generated layout as an oci-archive (`oci-layout`, `index.json`,
/// then the blobs in name order, deterministic headers): the file both tools
/// import from, written by neither.
pub(crate) fn write_reference_archive(layout: &Path, path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, file));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_path_with_name(layout.join("oci-layout"), "oci-layout")?;
    builder.append_path_with_name(layout.join("index.json"), "index.json")?;
    let mut blobs = std::fs::read_dir(layout.join("blobs/sha256"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    blobs.sort();
    for blob in blobs {
        let name = blob.file_name().unwrap_or_default().to_string_lossy();
        builder.append_path_with_name(&blob, format!("blobs/sha256/{name}"))?;
    }
    let mut writer = builder.into_inner()?;
    writer.flush()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(())
}

/// Checks that an oci-archive holds `image` under `tag`: `index.json` names
/// the root, every manifest and blob is there with the right bytes (each
/// re-hashed), and nothing temporary was left beside the file.
pub(crate) fn verify_archive(path: &Path, image: &GeneratedImage, tag: &str) -> anyhow::Result<()> {
    use std::io::Read as _;
    for suffix in [".partial", ".tmp"] {
        let leftover = with_suffix(path, suffix);
        if leftover.exists() {
            bail!("{} was left behind", leftover.display());
        }
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    let mut index = None;
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut buffer = vec![0u8; 1 << 16];
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_owned();
        if name == "index.json" {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            index = Some(bytes);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let named = format!("sha256:{hex}");
            let digest = mirror_oci::parse_digest(&named)
                .with_context(|| format!("archive entry {name}"))?;
            let mut hasher = mirror_oci::Hasher::for_digest(&digest)
                .with_context(|| format!("archive entry {name}: no hasher"))?;
            loop {
                let n = entry.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
            }
            found.insert(named, hasher.finish().to_string());
        }
    }
    let index: Value =
        serde_json::from_slice(&index.context("no index.json")?).context("parsing index.json")?;
    let root = image.root_digest().to_string();
    let named = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["annotations"][REF_NAME] == tag && m["digest"] == root.as_str());
    if !named {
        bail!("index.json does not name {root} `{tag}`: {index}");
    }
    let expected = std::iter::once(root)
        .chain(image.manifests.iter().map(|(d, _)| d.digest().to_string()))
        .chain(image.blobs.iter().map(|d| d.digest().to_string()));
    for digest in expected {
        match found.get(&digest) {
            None => bail!("{digest} is missing"),
            Some(actual) if *actual != digest => bail!("{digest} holds other bytes ({actual})"),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks that the destination at `host` serves the corpus's root under its
/// tag with the source's digest, every child manifest by digest, and every
/// blob.
pub(crate) async fn verify(host: &str, auth: &PushAuth, corpus: &Corpus) -> anyhow::Result<()> {
    let (bytes, _, _) = mirror_testkit::fetch_manifest(host, corpus.repo, corpus.tag, auth).await?;
    let got = mirror_oci::digest_of(&bytes);
    let want = corpus.image.root_digest();
    if got != want {
        bail!(
            "{}:{} is {got}, the source's is {want}",
            corpus.repo,
            corpus.tag
        );
    }
    for (manifest, _) in &corpus.image.manifests {
        let digest = manifest.digest().to_string();
        let (bytes, _, _) = mirror_testkit::fetch_manifest(host, corpus.repo, &digest, auth)
            .await
            .with_context(|| format!("manifest {digest}"))?;
        if mirror_oci::digest_of(&bytes).to_string() != digest {
            bail!("manifest {digest} has other bytes");
        }
    }
    for blob in &corpus.image.blobs {
        if !mirror_testkit::blob_exists(host, corpus.repo, blob.digest(), auth).await? {
            bail!("blob {} is missing", blob.digest());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mirror_testkit::ImageSpec;

    use super::*;
    use crate::ARCHIVE_TAG;

    #[test]
    fn archives_are_verified_blob_by_blob() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let image = mirror_testkit::generate_into(&ImageSpec::small("bench-unit", 7), dir.path())?;
        let archive = dir.path().join("a.tar");
        write_reference_archive(&image.layout, &archive)?;
        verify_archive(&archive, &image, ARCHIVE_TAG)?;
        assert!(verify_archive(&archive, &image, "other-tag").is_err());

        // A flipped byte in the largest blob.
        let largest = image
            .blobs
            .iter()
            .max_by_key(|b| b.size())
            .context("a blob")?
            .digest()
            .digest()
            .to_owned();
        let mut offset = None;
        for entry in tar::Archive::new(std::fs::File::open(&archive)?).entries()? {
            let entry = entry?;
            if entry.path_bytes().ends_with(largest.as_bytes()) {
                offset = Some(entry.raw_file_position());
            }
        }
        let mut bytes = std::fs::read(&archive)?;
        let at = usize::try_from(offset.context("the blob's entry")?)? + 100;
        bytes[at] ^= 0xff;
        let corrupt = dir.path().join("corrupt.tar");
        std::fs::write(&corrupt, &bytes)?;
        let err = verify_archive(&corrupt, &image, ARCHIVE_TAG).expect_err("a corrupt blob");
        assert!(err.to_string().contains("other bytes"), "{err:#}");

        // Leftovers of a write.
        std::fs::create_dir(with_suffix(&archive, ".partial"))?;
        assert!(verify_archive(&archive, &image, ARCHIVE_TAG).is_err());
        remove_archive(&archive)?;
        assert!(!archive.exists() && !with_suffix(&archive, ".partial").exists());
        Ok(())
    }
}
