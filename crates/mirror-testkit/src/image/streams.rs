//! The byte streams a layer is written through: seeded pseudo-random content,
//! a stored-block gzip encoder and a hashing pass-through. Generic `Read` and
//! `Write` plumbing with no knowledge of images, kept apart from the layout
//! writer so each can be read on its own.

use std::io::{Read, Write};

use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use mirror_oci::{Digest, Hasher};

/// `size` pseudo-random bytes: the AES-128-CTR keystream under a key derived
/// from `seed`. A seeded stream cipher in C (aws-lc) rather than a Rust PRNG
/// because this crate is built without optimisation in tests, and a 1 GiB
/// layer must still take seconds, not minutes.
pub(super) struct SeededReader {
    key: EncryptingKey,
    /// The current 1 MiB of keystream and how much of it was handed out.
    chunk: Vec<u8>,
    used: usize,
    next_chunk: u64,
    remaining: u64,
}

pub(super) const KEYSTREAM_CHUNK: usize = 1 << 20;

impl SeededReader {
    pub(super) fn new(seed: u64, size: u64) -> anyhow::Result<Self> {
        let material = mirror_oci::digest_of(format!("mirror-testkit layer {seed}").as_bytes());
        let bytes = hex::decode(material.digest())?;
        let key = UnboundCipherKey::new(&AES_128, &bytes[..16])
            .map_err(|_| anyhow::anyhow!("AES key"))?;
        Ok(Self {
            key: EncryptingKey::ctr(key).map_err(|_| anyhow::anyhow!("AES-CTR key"))?,
            chunk: Vec::new(),
            used: 0,
            next_chunk: 0,
            remaining: size,
        })
    }

    /// The keystream of chunk k starts at counter k * (chunk / 16), so the
    /// bytes never depend on how callers size their reads.
    fn refill(&mut self) -> std::io::Result<()> {
        // `fill` is a memset even unoptimised; `resize` is a byte loop.
        if self.chunk.len() != KEYSTREAM_CHUNK {
            self.chunk = vec![0; KEYSTREAM_CHUNK];
        } else {
            self.chunk.fill(0);
        }
        let counter = u128::from(self.next_chunk) * (KEYSTREAM_CHUNK as u128 / 16);
        self.key
            .less_safe_encrypt(
                &mut self.chunk,
                EncryptionContext::Iv128(counter.to_be_bytes().into()),
            )
            .map_err(|_| std::io::Error::other("AES-CTR keystream"))?;
        self.next_chunk += 1;
        self.used = 0;
        Ok(())
    }
}

impl Read for SeededReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.used == self.chunk.len() {
            self.refill()?;
        }
        let n = buf
            .len()
            .min(self.chunk.len() - self.used)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.chunk[self.used..self.used + n]);
        self.used += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The largest stored deflate block.
const STORED_BLOCK: usize = 65_535;

/// A gzip stream of stored (uncompressed) deflate blocks: valid gzip that any
/// decoder reads, at the speed of a copy. Random bytes don't compress anyway,
/// and flate2's level 0 spends most of a 1 GiB layer's time in its matcher.
/// Blocks are cut every 65,535 bytes of input, whatever the write sizes, so
/// the output depends only on the content.
pub(super) struct StoredGzip<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    size: u32,
    block: Vec<u8>,
}

impl<W: Write> StoredGzip<W> {
    pub(super) fn new(mut inner: W) -> std::io::Result<Self> {
        // Magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        Ok(Self {
            inner,
            crc: crc32fast::Hasher::new(),
            size: 0,
            block: Vec::with_capacity(STORED_BLOCK),
        })
    }

    fn emit(&mut self, last: bool) -> std::io::Result<()> {
        let len = self.block.len() as u16;
        let mut head = [u8::from(last), 0, 0, 0, 0];
        head[1..3].copy_from_slice(&len.to_le_bytes());
        head[3..5].copy_from_slice(&(!len).to_le_bytes());
        self.inner.write_all(&head)?;
        self.inner.write_all(&self.block)?;
        self.block.clear();
        Ok(())
    }

    pub(super) fn finish(mut self) -> std::io::Result<W> {
        self.emit(true)?;
        let crc = self.crc.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&self.size.to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for StoredGzip<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(STORED_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size = self.size.wrapping_add(n as u32);
        if self.block.len() == STORED_BLOCK {
            self.emit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Passes writes on while hashing (sha256) and counting them.
pub(super) struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::Sha256(Default::default()),
            count: 0,
        }
    }

    pub(super) fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
