//! GPL source archives without re-zipping the tree for every job.
//!
//! Once per firmware commit the worker zips the tree (without `.git` and `.build`) into a *base*
//! archive, stored as `sources/<commit>.zip`, and records where its central directory starts in
//! `sources/<commit>.json`. A job's archive is then composed by the artifact store from
//!
//! ```text
//! [base entries] [job entries] [base central directory] [job central directory + end records]
//! ```
//!
//! The two base pieces are server-side copies of byte ranges of the base; only the job's own
//! files (its keymap.json, its firmware) and a few hundred bytes of directory are new. Base
//! entries keep their offsets, because the job's entries are inserted *after* all of them.
//!
//! The job archive's SHA-256 is computed without reading the base again: the index keeps the
//! hash state after the base entries ([`Sha256State`], SHA-256 stopped before its padding), and
//! the base's central directory (a few MB) is stored beside it as `sources/<commit>.cd` and
//! read once per worker; a job hashes only its own entries, that directory and the tail.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ports::{ArtifactBody, ArtifactError, ArtifactKey, ArtifactMeta, ArtifactStore, Part};

/// Where the base archive's pieces are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseIndex {
    pub cd_offset: u64,
    pub cd_size: u64,
    pub entries: u64,
    /// SHA-256 state after the base's bytes `0..cd_offset` (absent in indexes written before
    /// hashes were kept; such a base is rebuilt, which gives the same bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_sha256: Option<Sha256State>,
}

/// A base archive ready for jobs: its index and its central directory (bytes
/// `cd_offset..cd_offset + cd_size`), which every job archive's hash runs over.
#[derive(Debug, Clone)]
pub struct Base {
    pub index: BaseIndex,
    pub central_directory: Bytes,
}

const SHA256_H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 (FIPS 180-4) that can be stored part-way and continued: the eight state words after
/// `len` bytes (a multiple of 64), and the bytes of the block not yet complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha256State {
    pub h: [u32; 8],
    pub len: u64,
    pub pending: Vec<u8>,
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State {
            h: SHA256_H0,
            len: 0,
            pending: Vec::new(),
        }
    }
}

impl Sha256State {
    fn block(&mut self, b: &[u8]) {
        use sha2::digest::generic_array::GenericArray;
        sha2::compress256(
            &mut self.h,
            std::slice::from_ref(GenericArray::from_slice(b)),
        );
        self.len += 64;
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            self.block(&block);
        }
        let mut blocks = data.chunks_exact(64);
        for b in blocks.by_ref() {
            self.block(b);
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    /// The digest, lower-case hex.
    pub fn finish_hex(mut self) -> String {
        let bits = (self.len + self.pending.len() as u64) * 8;
        let mut last = std::mem::take(&mut self.pending);
        last.push(0x80);
        while last.len() % 64 != 56 {
            last.push(0);
        }
        last.extend_from_slice(&bits.to_be_bytes());
        for b in last.chunks_exact(64) {
            self.block(b);
        }
        self.h.iter().map(|w| format!("{w:08x}")).collect()
    }
}

/// Lower-case hex SHA-256 of `data` (the hashes in job results).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source archive I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("source archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("source archive: not a zip file ({0})")]
    Format(&'static str),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Backend(#[from] crate::ports::BackendError),
    #[error("source archive: {0}")]
    Key(#[from] crate::ports::InvalidArtifactKey),
}

pub fn base_key(commit: &str) -> Result<ArtifactKey, crate::ports::InvalidArtifactKey> {
    ArtifactKey::new(format!("sources/{commit}.zip"))
}

pub fn index_key(commit: &str) -> Result<ArtifactKey, crate::ports::InvalidArtifactKey> {
    ArtifactKey::new(format!("sources/{commit}.json"))
}

pub fn cd_key(commit: &str) -> Result<ArtifactKey, crate::ports::InvalidArtifactKey> {
    ArtifactKey::new(format!("sources/{commit}.cd"))
}

pub fn zip_meta(file_name: &str) -> ArtifactMeta {
    ArtifactMeta {
        content_type: "application/zip".into(),
        file_name: file_name.into(),
    }
}

/// Whether `rel` is a firmware file `qmk compile` left in the tree's root: a build output, not
/// source. In the base archive it would also shadow the job's own firmware of the same name
/// (unzip takes the first of two equal names).
fn is_root_firmware(rel: &Path) -> bool {
    rel.parent().is_some_and(|p| p.as_os_str().is_empty())
        && rel
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| super::tree::FIRMWARE_EXTENSIONS.contains(&e))
}

/// Files of the tree that belong in the source archive, sorted (the archive is reproducible).
fn tree_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let name = entry.file_name();
            let ft = entry.file_type()?;
            let rel_child = rel.join(&name);
            if name == ".git" || (rel.as_os_str().is_empty() && name == ".build") {
                continue;
            }
            // Symlinks are not followed: they could lead out of the tree.
            if ft.is_dir() {
                stack.push(rel_child);
            } else if ft.is_file()
                && rel_child.extension().is_none_or(|e| e != "zip")
                && !is_root_firmware(&rel_child)
            {
                out.push(rel_child);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Zips the tree into `dest` and returns where its central directory is.
pub fn build_base(tree: &Path, dest: &Path) -> Result<BaseIndex, SourceError> {
    let file = std::fs::File::create(dest)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let mut buf = Vec::new();
    for rel in tree_files(tree)? {
        let Some(name) = rel.to_str() else { continue };
        buf.clear();
        std::fs::File::open(tree.join(&rel))?.read_to_end(&mut buf)?;
        zip.start_file(name, opts)?;
        zip.write_all(&buf)?;
    }
    zip.finish()?.flush()?;
    let mut f = std::fs::File::open(dest)?;
    let mut idx = read_index(&mut f)?;
    // Hash the entries once here, so no job reads them again.
    f.seek(SeekFrom::Start(0))?;
    let mut state = Sha256State::default();
    let mut left = idx.cd_offset;
    let mut chunk = vec![0u8; 1 << 20];
    while left > 0 {
        let n = (left as usize).min(chunk.len());
        f.read_exact(&mut chunk[..n])?;
        state.update(&chunk[..n]);
        left -= n as u64;
    }
    idx.prefix_sha256 = Some(state);
    Ok(idx)
}

fn u16le(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}
fn u32le(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}
fn u64le(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads the end-of-central-directory records (zip64 ones too) of a zip file.
pub fn read_index<R: Read + Seek>(r: &mut R) -> Result<BaseIndex, SourceError> {
    let len = r.seek(SeekFrom::End(0))?;
    let tail_len = len.min(22 + 65_535 + 20);
    r.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    r.read_exact(&mut tail)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or(SourceError::Format("no end of central directory"))?;
    let mut idx = BaseIndex {
        entries: u16le(&tail, eocd + 10),
        cd_size: u32le(&tail, eocd + 12),
        cd_offset: u32le(&tail, eocd + 16),
        prefix_sha256: None,
    };
    if idx.entries == 0xFFFF || idx.cd_size == 0xFFFF_FFFF || idx.cd_offset == 0xFFFF_FFFF {
        let loc = eocd
            .checked_sub(20)
            .ok_or(SourceError::Format("no zip64 locator"))?;
        if tail[loc..loc + 4] != [0x50, 0x4b, 0x06, 0x07] {
            return Err(SourceError::Format("no zip64 locator"));
        }
        let at = u64le(&tail, loc + 8);
        r.seek(SeekFrom::Start(at))?;
        let mut rec = [0u8; 56];
        r.read_exact(&mut rec)?;
        if rec[..4] != [0x50, 0x4b, 0x06, 0x06] {
            return Err(SourceError::Format("bad zip64 end record"));
        }
        idx = BaseIndex {
            entries: u64le(&rec, 32),
            cd_size: u64le(&rec, 40),
            cd_offset: u64le(&rec, 48),
            prefix_sha256: None,
        };
    }
    Ok(idx)
}

/// One file a job adds to the base.
pub struct JobFile {
    pub name: String,
    pub data: Bytes,
}

/// The job's local entries (stored, uncompressed: they are small) to insert at `at`, and the
/// central directory records plus end records that follow the base's central directory.
pub fn job_parts(base: &BaseIndex, files: &[JobFile]) -> (Vec<u8>, Vec<u8>) {
    const DOS_DATE_1980: u16 = 0x0021;
    let mut local = Vec::new();
    let mut central = Vec::new();
    for f in files {
        let offset = base.cd_offset + local.len() as u64;
        let crc = crc32fast::hash(&f.data);
        let size = f.data.len() as u32;
        let name = f.name.as_bytes();
        let big = offset >= 0xFFFF_FFFF;
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&20u16.to_le_bytes());
        local.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
        local.extend_from_slice(&0u16.to_le_bytes()); // stored
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(&DOS_DATE_1980.to_le_bytes());
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name);
        local.extend_from_slice(&f.data);

        let extra: Vec<u8> = if big {
            let mut e = Vec::new();
            e.extend_from_slice(&1u16.to_le_bytes());
            e.extend_from_slice(&8u16.to_le_bytes());
            e.extend_from_slice(&offset.to_le_bytes());
            e
        } else {
            Vec::new()
        };
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes()); // made by Unix
        central.extend_from_slice(&(if big { 45u16 } else { 20 }).to_le_bytes());
        central.extend_from_slice(&0x0800u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&DOS_DATE_1980.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&((0o100644u32) << 16).to_le_bytes());
        central.extend_from_slice(&(if big { 0xFFFF_FFFF } else { offset as u32 }).to_le_bytes());
        central.extend_from_slice(name);
        central.extend_from_slice(&extra);
    }
    let entries = base.entries + files.len() as u64;
    let cd_offset = base.cd_offset + local.len() as u64;
    let cd_size = base.cd_size + central.len() as u64;
    let zip64 = entries >= 0xFFFF || cd_offset >= 0xFFFF_FFFF || cd_size >= 0xFFFF_FFFF;
    let mut tail = central;
    if zip64 {
        let rec_at = cd_offset + cd_size;
        tail.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        tail.extend_from_slice(&44u64.to_le_bytes());
        tail.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
        tail.extend_from_slice(&45u16.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&entries.to_le_bytes());
        tail.extend_from_slice(&entries.to_le_bytes());
        tail.extend_from_slice(&cd_size.to_le_bytes());
        tail.extend_from_slice(&cd_offset.to_le_bytes());
        tail.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&rec_at.to_le_bytes());
        tail.extend_from_slice(&1u32.to_le_bytes());
    }
    let e16 = if zip64 { 0xFFFF } else { entries as u16 };
    tail.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    tail.extend_from_slice(&e16.to_le_bytes());
    tail.extend_from_slice(&e16.to_le_bytes());
    tail.extend_from_slice(&(if zip64 { 0xFFFF_FFFF } else { cd_size as u32 }).to_le_bytes());
    tail.extend_from_slice(&(if zip64 { 0xFFFF_FFFF } else { cd_offset as u32 }).to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    (local, tail)
}

/// The stored central directory of a base, if its index and directory are both there.
async fn stored_base(
    artifacts: &dyn ArtifactStore,
    commit: &str,
) -> Result<Option<Base>, SourceError> {
    let index = match artifacts.get(&index_key(commit)?).await {
        Ok(bytes) => match serde_json::from_slice::<BaseIndex>(&bytes) {
            Ok(idx) if idx.prefix_sha256.is_some() => idx,
            _ => return Ok(None),
        },
        Err(ArtifactError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match artifacts.get(&cd_key(commit)?).await {
        Ok(cd) if cd.len() as u64 == index.cd_size => Ok(Some(Base {
            index,
            central_directory: cd,
        })),
        Ok(_) | Err(ArtifactError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes sure the base archive of `commit` is stored, building it from `tree` if not; returns
/// it. `scratch` is a writable directory for the temporary zip. The archive is reproducible,
/// so rebuilding one stored without its hash state stores the same bytes again.
pub async fn ensure_base(
    artifacts: &dyn ArtifactStore,
    tree: &Path,
    commit: &str,
    scratch: &Path,
) -> Result<Base, SourceError> {
    let ikey = index_key(commit)?;
    if let Some(base) = stored_base(artifacts, commit).await? {
        return Ok(base);
    }
    std::fs::create_dir_all(scratch)?;
    let dest = scratch.join(format!("base-{commit}.zip"));
    let (tree2, dest2) = (tree.to_path_buf(), dest.clone());
    let (idx, cd) = tokio::task::spawn_blocking(move || {
        let idx = build_base(&tree2, &dest2)?;
        let mut f = std::fs::File::open(&dest2)?;
        f.seek(SeekFrom::Start(idx.cd_offset))?;
        let mut cd = vec![0u8; idx.cd_size as usize];
        f.read_exact(&mut cd)?;
        Ok::<_, SourceError>((idx, Bytes::from(cd)))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    artifacts
        .put(
            &base_key(commit)?,
            ArtifactBody::File(dest.clone()),
            &zip_meta(&format!("qmk_firmware-{commit}.zip")),
        )
        .await?;
    artifacts
        .put(
            &cd_key(commit)?,
            ArtifactBody::Bytes(cd.clone()),
            &ArtifactMeta {
                content_type: "application/octet-stream".into(),
                file_name: format!("{commit}.cd"),
            },
        )
        .await?;
    let json = serde_json::to_vec(&idx).map_err(|e| std::io::Error::other(e.to_string()))?;
    // Written last: an index names a base that is complete.
    artifacts
        .put(
            &ikey,
            ArtifactBody::Bytes(Bytes::from(json)),
            &ArtifactMeta {
                content_type: "application/json".into(),
                file_name: format!("{commit}.json"),
            },
        )
        .await?;
    let _ = std::fs::remove_file(&dest);
    Ok(Base {
        index: idx,
        central_directory: cd,
    })
}

/// SHA-256 (hex) of the archive [`compose_job_archive`] stores from `base` and the job's
/// `local` entries and `tail`; `None` without the base's hash state.
pub fn job_archive_sha256(base: &Base, local: &[u8], tail: &[u8]) -> Option<String> {
    let mut state = base.index.prefix_sha256.clone()?;
    state.update(local);
    state.update(&base.central_directory);
    state.update(tail);
    Some(state.finish_hex())
}

/// Stores the job's archive at `key`: the base plus `files`, composed without re-zipping.
/// Returns its SHA-256 (hex), computed without reading the base's entries.
pub async fn compose_job_archive(
    artifacts: &dyn ArtifactStore,
    commit: &str,
    base: &Base,
    files: &[JobFile],
    key: &ArtifactKey,
    file_name: &str,
) -> Result<Option<String>, SourceError> {
    let bkey = base_key(commit)?;
    let (local, tail) = job_parts(&base.index, files);
    let sha = job_archive_sha256(base, &local, &tail);
    let base = &base.index;
    let parts = vec![
        Part::Copy {
            from: bkey.clone(),
            range: 0..base.cd_offset,
        },
        Part::Bytes(Bytes::from(local)),
        Part::Copy {
            from: bkey,
            range: base.cd_offset..base.cd_offset + base.cd_size,
        },
        Part::Bytes(Bytes::from(tail)),
    ];
    artifacts.compose(key, parts, &zip_meta(file_name)).await?;
    Ok(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose_locally(base: &[u8], idx: &BaseIndex, files: &[JobFile]) -> Vec<u8> {
        let (local, tail) = job_parts(idx, files);
        let mut out = base[..idx.cd_offset as usize].to_vec();
        out.extend_from_slice(&local);
        out.extend_from_slice(
            &base[idx.cd_offset as usize..(idx.cd_offset + idx.cd_size) as usize],
        );
        out.extend_from_slice(&tail);
        out
    }

    fn check(tree_files: usize) {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("keyboards/kb")).unwrap();
        std::fs::create_dir_all(tree.join(".git")).unwrap();
        std::fs::create_dir_all(tree.join(".build")).unwrap();
        std::fs::write(tree.join(".git/HEAD"), "x").unwrap();
        std::fs::write(tree.join(".build/junk.o"), "x").unwrap();
        // Left by an earlier `qmk compile` in the tree: not source, and it would shadow the
        // job's own firmware of the same name.
        std::fs::write(tree.join("kb_mine.hex"), "stale").unwrap();
        for i in 0..tree_files {
            std::fs::write(
                tree.join(format!("keyboards/kb/f{i}.c")),
                format!("int x{i};"),
            )
            .unwrap();
        }
        let base_path = d.path().join("base.zip");
        let idx = build_base(&tree, &base_path).unwrap();
        assert_eq!(idx.entries, tree_files as u64);
        let base = std::fs::read(&base_path).unwrap();
        let files = [
            JobFile {
                name: "kb-mine.json".into(),
                data: Bytes::from_static(b"{\"keyboard\":\"kb\"}\n"),
            },
            JobFile {
                name: "kb_mine.hex".into(),
                data: Bytes::from_static(b":00000001FF\n"),
            },
        ];
        let out = compose_locally(&base, &idx, &files);
        // The hash from the stored state is the hash of the whole archive.
        let (local, tail) = job_parts(&idx, &files);
        let cd = &base[idx.cd_offset as usize..(idx.cd_offset + idx.cd_size) as usize];
        let b = Base {
            index: idx.clone(),
            central_directory: Bytes::copy_from_slice(cd),
        };
        assert_eq!(
            job_archive_sha256(&b, &local, &tail),
            Some(sha256_hex(&out))
        );
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(out)).unwrap();
        assert_eq!(z.len(), tree_files + 2);
        let mut s = String::new();
        z.by_name("kb_mine.hex")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, ":00000001FF\n");
        s.clear();
        z.by_name(&format!("keyboards/kb/f{}.c", tree_files - 1))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, format!("int x{};", tree_files - 1));
        assert!(z.by_name(".git/HEAD").is_err());
        assert!(z.by_name(".build/junk.o").is_err());
    }

    #[test]
    fn resumable_sha256_matches_sha2_at_every_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 127, 128, 200, 300] {
            let whole = sha256_hex(&data[..len]);
            for split in [0, len / 3, len / 2, len] {
                let mut s = Sha256State::default();
                s.update(&data[..split]);
                // Through JSON, as the index stores it.
                let mut s: Sha256State =
                    serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
                for piece in data[split..len].chunks(17) {
                    s.update(piece);
                }
                assert_eq!(s.finish_hex(), whole, "len {len} split {split}");
            }
        }
    }

    #[test]
    fn composed_archive_is_a_valid_zip() {
        check(3);
    }

    #[test]
    fn composed_archive_with_zip64_entry_count() {
        // A base with more entries than the 16-bit count holds, made in memory (fast).
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..66_000 {
            w.start_file(format!("f{i}"), opts).unwrap();
        }
        let base = w.finish().unwrap().into_inner();
        let idx = read_index(&mut std::io::Cursor::new(&base)).unwrap();
        assert_eq!(idx.entries, 66_000);
        let files = [JobFile {
            name: "kb_mine.hex".into(),
            data: Bytes::from_static(b":00000001FF\n"),
        }];
        let out = compose_locally(&base, &idx, &files);
        assert_eq!(
            read_index(&mut std::io::Cursor::new(&out)).unwrap().entries,
            66_001
        );
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(out)).unwrap();
        assert_eq!(z.len(), 66_001);
        let mut s = String::new();
        z.by_name("kb_mine.hex")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, ":00000001FF\n");
        assert!(z.by_name("f65999").is_ok());
    }
}
