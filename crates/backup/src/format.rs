//! Drover's backup file format, version 1 (documented in docs/backup.md).
//!
//! ```text
//! "DRBACKUP" | u32 header length | header (JSON)
//! frames: u32 length (top bit set on the last frame) | payload
//! "DRBK-END" | u32 trailer length | trailer (JSON)
//! ```
//!
//! The frames carry a gzip stream of records; with a key, each frame's
//! payload is one message of an XChaCha20-Poly1305 STREAM (key derived
//! from the key file with Argon2id and the header's salt; every message
//! authenticates the header too). The trailer holds the counts and the
//! SHA-256 of every byte before it (an encrypted file is read, and so
//! checked, only with its key). Records: a tag byte (1: a row, 0: the
//! end), then revision, create revision, deleted flag, write time, key and
//! value; the end tag is
//! followed by the number of rows.
//!
//! Reading and writing are synchronous over `std::io` and stream: a file
//! is never held whole in memory.

use std::io::{self, Read, Write};

use aead_stream::{DecryptorBE32, EncryptorBE32};
use base64::Engine as _;
use bytes::Bytes;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use drover_store::{LogRow, Revision};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::key::Key;
use crate::BackupError;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"DRBACKUP";
/// The bytes that open the trailer.
pub const END_MAGIC: &[u8; 8] = b"DRBK-END";
/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The cipher named in an encrypted file's header.
pub const CIPHER: &str = "xchacha20poly1305-stream-be32";
/// The key derivation named in an encrypted file's header.
pub const KDF: &str = "argon2id";

/// Payload bytes per frame.
const FRAME: usize = 64 * 1024;
/// The top bit of a frame's length marks the last frame.
const LAST: u32 = 1 << 31;
/// Headers and trailers are small; anything larger is not a backup.
const MAX_META: u32 = 64 * 1024;
/// Keys and values are bounded as the store bounds them (with room).
const MAX_FIELD: u32 = 64 * 1024 * 1024;
/// The plaintext the key check encrypts.
const KEY_CHECK: &[u8] = b"drover-backup-key-check";

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    /// Every live object at one revision.
    Snapshot,
    /// A segment of the store's log: every write in a range of revisions.
    Log,
}

/// The header: what the file is, readable without the key. A newer
/// format or Drover version is refused before the fields are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    /// The format version.
    pub format: u32,
    /// Snapshot or log segment.
    pub kind: FileKind,
    /// The Drover version that wrote it.
    pub drover_version: String,
    /// When it was written (RFC 3339, UTC).
    pub created_at: String,
    /// A snapshot's revision; the last revision of a log segment.
    pub revision: Revision,
    /// The first revision of a log segment (0 for a snapshot).
    #[serde(default)]
    pub first_revision: Revision,
    /// Always `gzip`.
    pub compression: String,
    /// How the body is encrypted, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// An encrypted file's parameters (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encryption {
    /// [`CIPHER`].
    pub cipher: String,
    /// [`KDF`].
    pub kdf: String,
    /// The key derivation's salt (base64).
    pub salt: String,
    /// The STREAM's nonce prefix (base64, 19 bytes).
    pub nonce: String,
    /// A nonce (base64, 24 bytes) and the encryption of a fixed text
    /// under it: a wrong key is told from a damaged file.
    pub key_check_nonce: String,
    /// See `key_check_nonce`.
    pub key_check: String,
}

/// The trailer: counts and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trailer {
    /// Rows in the file.
    pub rows: u64,
    /// Of which deletions (log segments only).
    pub deletions: u64,
    /// Bytes before the trailer.
    pub bytes: u64,
    /// SHA-256 (hex) of every byte before the trailer.
    pub sha256: String,
}

/// A file's manifest: its header and trailer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// See [`Header`].
    #[serde(flatten)]
    pub header: Header,
    /// See [`Trailer`].
    pub trailer: Trailer,
}

impl Header {
    /// A header for a file written now by this build.
    pub fn new(kind: FileKind, first_revision: Revision, revision: Revision) -> Self {
        Self {
            format: FORMAT_VERSION,
            kind,
            drover_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at: crate::rfc3339(std::time::SystemTime::now()),
            revision,
            first_revision,
            compression: "gzip".into(),
            encryption: None,
        }
    }

    /// When the file was written.
    pub fn created(&self) -> Option<std::time::SystemTime> {
        crate::parse_rfc3339(&self.created_at)
    }
}

/// SHA-256 of everything written or read through it.
struct Hashing<T> {
    inner: T,
    sha: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            sha: Sha256::new(),
            bytes: 0,
        }
    }

    fn digest(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The cipher state of one file.
struct Sealing {
    stream: Option<EncryptorBE32<XChaCha20Poly1305>>,
    aad: [u8; 32],
}

/// Frames written below the gzip encoder.
struct FrameWriter<W: Write> {
    out: Hashing<W>,
    pending: Vec<u8>,
    sealing: Option<Sealing>,
}

impl<W: Write> FrameWriter<W> {
    fn emit(&mut self, last: bool) -> io::Result<()> {
        let plain = std::mem::take(&mut self.pending);
        let payload = match &mut self.sealing {
            None => plain,
            Some(s) => {
                let payload = Payload {
                    msg: &plain,
                    aad: &s.aad,
                };
                let sealed = if last {
                    s.stream.take().map(|e| e.encrypt_last(payload))
                } else {
                    s.stream.as_mut().map(|e| e.encrypt_next(payload))
                };
                sealed
                    .ok_or_else(|| io::Error::other("the backup stream was already finished"))?
                    .map_err(|_| io::Error::other("encryption failed"))?
            }
        };
        let mut len = payload.len() as u32;
        if last {
            len |= LAST;
        }
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(&payload)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = FRAME - self.pending.len();
        let n = room.min(buf.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == FRAME {
            self.emit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes one backup file.
pub struct Writer<W: Write> {
    gz: GzEncoder<FrameWriter<W>>,
    rows: u64,
    deletions: u64,
}

impl<W: Write> Writer<W> {
    /// Start a file: writes the header (with the encryption's parameters
    /// when `key` is given).
    pub fn new(out: W, mut header: Header, key: Option<&Key>) -> Result<Self, BackupError> {
        let mut rng = rand::thread_rng();
        let mut cipher = None;
        if let Some(key) = key {
            let salt = key.write_salt();
            let mut nonce = [0u8; 19];
            let mut check_nonce = [0u8; 24];
            rng.fill_bytes(&mut nonce);
            rng.fill_bytes(&mut check_nonce);
            let derived = key.derive(&salt)?;
            let aead = XChaCha20Poly1305::new_from_slice(&derived)
                .map_err(|_| BackupError::Crypto("bad key length"))?;
            let check = aead
                .encrypt(slice_nonce(&check_nonce)?, KEY_CHECK)
                .map_err(|_| BackupError::Crypto("encryption failed"))?;
            let b64 = base64::engine::general_purpose::STANDARD;
            header.encryption = Some(Encryption {
                cipher: CIPHER.into(),
                kdf: KDF.into(),
                salt: b64.encode(salt),
                nonce: b64.encode(nonce),
                key_check_nonce: b64.encode(check_nonce),
                key_check: b64.encode(check),
            });
            cipher = Some((aead, nonce));
        }
        let header_json = serde_json::to_vec(&header).expect("a header serialises");
        let mut out = Hashing::new(out);
        out.write_all(MAGIC)?;
        out.write_all(&(header_json.len() as u32).to_be_bytes())?;
        out.write_all(&header_json)?;
        let sealing = match cipher {
            None => None,
            Some((aead, nonce)) => Some(Sealing {
                stream: Some(EncryptorBE32::from_aead(aead, stream_nonce(&nonce)?)),
                aad: Sha256::digest(&header_json).into(),
            }),
        };
        let frames = FrameWriter {
            out,
            pending: Vec::with_capacity(FRAME),
            sealing,
        };
        Ok(Self {
            gz: GzEncoder::new(frames, flate2::Compression::fast()),
            rows: 0,
            deletions: 0,
        })
    }

    /// Append one row.
    pub fn write_row(&mut self, row: &LogRow) -> Result<(), BackupError> {
        let gz = &mut self.gz;
        gz.write_all(&[1])?;
        gz.write_all(&row.revision.to_be_bytes())?;
        gz.write_all(&row.create_revision.to_be_bytes())?;
        gz.write_all(&[row.deleted as u8])?;
        gz.write_all(&row.at_micros.to_be_bytes())?;
        gz.write_all(&(row.key.len() as u32).to_be_bytes())?;
        gz.write_all(row.key.as_bytes())?;
        gz.write_all(&(row.value.len() as u32).to_be_bytes())?;
        gz.write_all(&row.value)?;
        self.rows += 1;
        self.deletions += row.deleted as u64;
        Ok(())
    }

    /// Finish the file: the end record, the last frame and the trailer.
    /// Returns the trailer and the writer.
    pub fn finish(mut self) -> Result<(Trailer, W), BackupError> {
        self.gz.write_all(&[0])?;
        self.gz.write_all(&self.rows.to_be_bytes())?;
        let mut frames = self.gz.finish()?;
        frames.emit(true)?;
        let trailer = Trailer {
            rows: self.rows,
            deletions: self.deletions,
            bytes: frames.out.bytes,
            sha256: frames.out.digest(),
        };
        let mut out = frames.out.inner;
        let json = serde_json::to_vec(&trailer).expect("a trailer serialises");
        out.write_all(END_MAGIC)?;
        out.write_all(&(json.len() as u32).to_be_bytes())?;
        out.write_all(&json)?;
        out.flush()?;
        Ok((trailer, out))
    }
}

fn slice_nonce(b: &[u8; 24]) -> Result<&chacha20poly1305::XNonce, BackupError> {
    b[..]
        .try_into()
        .map_err(|_| BackupError::Crypto("bad nonce length"))
}

fn stream_nonce(
    b: &[u8; 19],
) -> Result<
    &aead_stream::Nonce<XChaCha20Poly1305, aead_stream::StreamBE32<XChaCha20Poly1305>>,
    BackupError,
> {
    b[..]
        .try_into()
        .map_err(|_| BackupError::Crypto("bad nonce length"))
}

/// Frames read below the gzip decoder.
struct FrameReader<R: Read> {
    input: Hashing<R>,
    current: Vec<u8>,
    at: usize,
    last_seen: bool,
    opening: Option<(Option<DecryptorBE32<XChaCha20Poly1305>>, [u8; 32])>,
}

impl<R: Read> FrameReader<R> {
    fn next_frame(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len);
        let last = len & LAST != 0;
        let len = len & !LAST;
        if len as usize > FRAME + 64 {
            return Err(corrupt("a frame is larger than any Drover writes"));
        }
        let mut payload = vec![0u8; len as usize];
        self.input.read_exact(&mut payload)?;
        self.current = match &mut self.opening {
            None => payload,
            Some((stream, aad)) => {
                let payload = Payload {
                    msg: &payload,
                    aad: &aad[..],
                };
                let opened = if last {
                    stream.take().map(|d| d.decrypt_last(payload))
                } else {
                    stream.as_mut().map(|d| d.decrypt_next(payload))
                };
                opened
                    .ok_or_else(|| corrupt("data after the last frame"))?
                    .map_err(|_| corrupt("a frame does not decrypt: the file is damaged"))?
            }
        };
        self.at = 0;
        self.last_seen = last;
        Ok(())
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.last_seen {
                return Ok(0);
            }
            self.next_frame()?;
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads one backup file, row by row; the checksum and counts are checked
/// when the last row has been read.
pub struct Reader<R: Read> {
    header: Header,
    gz: Option<GzDecoder<FrameReader<R>>>,
    rows: u64,
    deletions: u64,
    trailer: Option<Trailer>,
}

/// Read the magic and the header, nothing else.
pub fn read_header<R: Read>(input: &mut R) -> Result<(Header, Vec<u8>), BackupError> {
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|_| BackupError::NotABackup)?;
    if &magic != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(damaged)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_META {
        return Err(BackupError::Corrupt("the header is too large".into()));
    }
    let mut json = vec![0u8; len as usize];
    input.read_exact(&mut json).map_err(damaged)?;
    // The version first, so that a newer file is named as such even if
    // its header has fields this build does not know.
    let loose: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|_| BackupError::Corrupt("the header is not readable".into()))?;
    let version = loose
        .get("format")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| BackupError::Corrupt("the header has no format".into()))?;
    let drover = loose["droverVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if version > u64::from(FORMAT_VERSION) {
        return Err(BackupError::NewerFormat {
            format: version,
            drover,
        });
    }
    if newer(&drover) {
        return Err(BackupError::NewerDrover(drover));
    }
    let header: Header = serde_json::from_slice(&json)
        .map_err(|e| BackupError::Corrupt(format!("the header is not readable: {e}")))?;
    Ok((header, json))
}

fn damaged(e: io::Error) -> BackupError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        BackupError::Corrupt("the file ends early".into())
    } else {
        BackupError::Io(e)
    }
}

impl<R: Read> Reader<R> {
    /// Open a file: reads the header and, when it is encrypted, checks
    /// `key` against it.
    pub fn open(input: R, key: Option<&Key>) -> Result<Self, BackupError> {
        let mut input = Hashing::new(input);
        let (header, header_json) = read_header(&mut input)?;
        let opening = match (&header.encryption, key) {
            (None, _) => None,
            (Some(_), None) => return Err(BackupError::KeyRequired),
            (Some(enc), Some(key)) => Some(open_cipher(enc, key, &header_json)?),
        };
        let frames = FrameReader {
            input,
            current: Vec::new(),
            at: 0,
            last_seen: false,
            opening,
        };
        Ok(Self {
            header,
            gz: Some(GzDecoder::new(frames)),
            rows: 0,
            deletions: 0,
            trailer: None,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The trailer, once every row was read and checked.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// The next row; `None` once the end was read and the whole file
    /// checked.
    pub fn next_row(&mut self) -> Result<Option<LogRow>, BackupError> {
        let Some(gz) = self.gz.as_mut() else {
            return Ok(None);
        };
        let mut tag = [0u8; 1];
        gz.read_exact(&mut tag).map_err(body_error)?;
        match tag[0] {
            1 => {}
            0 => {
                let mut count = [0u8; 8];
                gz.read_exact(&mut count).map_err(body_error)?;
                if u64::from_be_bytes(count) != self.rows {
                    return Err(BackupError::Corrupt("the row count does not match".into()));
                }
                self.finish()?;
                return Ok(None);
            }
            _ => return Err(BackupError::Corrupt("an unknown record".into())),
        }
        let revision = read_i64(gz)?;
        let create_revision = read_i64(gz)?;
        let mut deleted = [0u8; 1];
        gz.read_exact(&mut deleted).map_err(body_error)?;
        let at_micros = read_i64(gz)?;
        let key = read_field(gz)?;
        let key =
            String::from_utf8(key).map_err(|_| BackupError::Corrupt("a key is not text".into()))?;
        let value = read_field(gz)?;
        self.rows += 1;
        self.deletions += u64::from(deleted[0] != 0);
        Ok(Some(LogRow {
            revision,
            key,
            create_revision,
            deleted: deleted[0] != 0,
            value: Bytes::from(value),
            at_micros,
        }))
    }

    /// After the end record: the gzip stream ends, the last frame was
    /// read, and the trailer matches what was read.
    fn finish(&mut self) -> Result<(), BackupError> {
        let mut gz = self.gz.take().expect("finish runs once");
        let mut rest = [0u8; 1];
        if gz.read(&mut rest).map_err(body_error)? != 0 {
            return Err(BackupError::Corrupt("data after the end record".into()));
        }
        let mut frames = gz.into_inner();
        if frames.read(&mut rest).map_err(body_error)? != 0 || !frames.last_seen {
            return Err(BackupError::Corrupt("data after the end record".into()));
        }
        let sha = frames.input.digest();
        let bytes = frames.input.bytes;
        let mut input = frames.input.inner;
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(damaged)?;
        if &magic != END_MAGIC {
            return Err(BackupError::Corrupt("the trailer is missing".into()));
        }
        let mut len = [0u8; 4];
        input.read_exact(&mut len).map_err(damaged)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_META {
            return Err(BackupError::Corrupt("the trailer is too large".into()));
        }
        let mut json = vec![0u8; len as usize];
        input.read_exact(&mut json).map_err(damaged)?;
        let trailer: Trailer = serde_json::from_slice(&json)
            .map_err(|_| BackupError::Corrupt("the trailer is not readable".into()))?;
        if trailer.sha256 != sha || trailer.bytes != bytes {
            return Err(BackupError::ChecksumMismatch);
        }
        if trailer.rows != self.rows || trailer.deletions != self.deletions {
            return Err(BackupError::Corrupt(
                "the trailer's counts do not match".into(),
            ));
        }
        if input.read(&mut rest)? != 0 {
            return Err(BackupError::Corrupt("data after the trailer".into()));
        }
        self.trailer = Some(trailer);
        Ok(())
    }
}

/// Whether a file written by Drover `version` is newer than this build.
fn newer(version: &str) -> bool {
    fn parts(v: &str) -> Vec<u64> {
        v.split(['.', '-', '+'])
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    }
    parts(version) > parts(env!("CARGO_PKG_VERSION"))
}

fn open_cipher(
    enc: &Encryption,
    key: &Key,
    header_json: &[u8],
) -> Result<(Option<DecryptorBE32<XChaCha20Poly1305>>, [u8; 32]), BackupError> {
    if enc.cipher != CIPHER || enc.kdf != KDF {
        return Err(BackupError::Corrupt(format!(
            "unknown encryption {} with {}",
            enc.cipher, enc.kdf
        )));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = |_| BackupError::Corrupt("the encryption parameters are not readable".into());
    let salt = b64.decode(&enc.salt).map_err(bad)?;
    let nonce: [u8; 19] = b64
        .decode(&enc.nonce)
        .map_err(bad)?
        .try_into()
        .map_err(|_| BackupError::Corrupt("bad nonce".into()))?;
    let check_nonce: [u8; 24] = b64
        .decode(&enc.key_check_nonce)
        .map_err(bad)?
        .try_into()
        .map_err(|_| BackupError::Corrupt("bad nonce".into()))?;
    let check = b64.decode(&enc.key_check).map_err(bad)?;
    let derived = key.derive(&salt)?;
    let aead = XChaCha20Poly1305::new_from_slice(&derived)
        .map_err(|_| BackupError::Crypto("bad key length"))?;
    match aead.decrypt(slice_nonce(&check_nonce)?, &check[..]) {
        Ok(text) if text == KEY_CHECK => {}
        _ => return Err(BackupError::WrongKey),
    }
    let aad: [u8; 32] = Sha256::digest(header_json).into();
    Ok((
        Some(DecryptorBE32::from_aead(aead, stream_nonce(&nonce)?)),
        aad,
    ))
}

fn body_error(e: io::Error) -> BackupError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => BackupError::Corrupt("the file ends early".into()),
        io::ErrorKind::InvalidData => BackupError::Corrupt(e.to_string()),
        _ => BackupError::Io(e),
    }
}

fn read_i64<R: Read>(r: &mut R) -> Result<i64, BackupError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).map_err(body_error)?;
    Ok(i64::from_be_bytes(b))
}

fn read_field<R: Read>(r: &mut R) -> Result<Vec<u8>, BackupError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(body_error)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FIELD {
        return Err(BackupError::Corrupt(
            "a record is larger than any Drover writes".into(),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).map_err(body_error)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: i64) -> Vec<LogRow> {
        (1..=n)
            .map(|i| LogRow {
                revision: i,
                key: format!("/registry/things/t-{i}"),
                create_revision: i,
                deleted: i % 7 == 0,
                value: Bytes::from(format!(
                    "{{\"n\":{i},\"pad\":\"{}\"}}",
                    "x".repeat(i as usize % 300)
                )),
                at_micros: 1_700_000_000_000_000 + i,
            })
            .collect()
    }

    fn write(rows: &[LogRow], key: Option<&Key>) -> Vec<u8> {
        let mut w = Writer::new(
            Vec::new(),
            Header::new(FileKind::Log, 1, rows.len() as i64),
            key,
        )
        .unwrap();
        for r in rows {
            w.write_row(r).unwrap();
        }
        w.finish().unwrap().1
    }

    fn read_all(bytes: &[u8], key: Option<&Key>) -> Result<Vec<LogRow>, BackupError> {
        let mut r = Reader::open(bytes, key)?;
        let mut out = Vec::new();
        while let Some(row) = r.next_row()? {
            out.push(row);
        }
        assert!(r.trailer().is_some());
        Ok(out)
    }

    #[test]
    fn rows_come_back_as_written_with_and_without_a_key() {
        let rows = rows(3000);
        let key = Key::from_bytes(b"correct horse battery staple, 32+ bytes".to_vec()).unwrap();
        assert_eq!(read_all(&write(&rows, None), None).unwrap(), rows);
        let sealed = write(&rows, Some(&key));
        assert_eq!(read_all(&sealed, Some(&key)).unwrap(), rows);
        // The plaintext of the rows appears nowhere in the encrypted file.
        let needle = b"/registry/things/t-1";
        assert!(!sealed.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn a_wrong_or_missing_key_and_damage_are_told_apart() {
        let rows = rows(500);
        let key = Key::from_bytes(vec![7u8; 32]).unwrap();
        let other = Key::from_bytes(vec![8u8; 32]).unwrap();
        let sealed = write(&rows, Some(&key));
        assert!(matches!(
            read_all(&sealed, Some(&other)),
            Err(BackupError::WrongKey)
        ));
        assert!(matches!(
            read_all(&sealed, None),
            Err(BackupError::KeyRequired)
        ));
        for file in [write(&rows, None), sealed] {
            let mut damaged = file.clone();
            let i = damaged.len() / 2;
            damaged[i] ^= 0x40;
            let err = read_all(&damaged, Some(&key)).unwrap_err();
            assert!(
                matches!(err, BackupError::Corrupt(_) | BackupError::ChecksumMismatch),
                "{err:?}"
            );
            let truncated = &file[..file.len() - 10];
            assert!(read_all(truncated, Some(&key)).is_err());
        }
    }

    #[test]
    fn a_file_from_a_newer_drover_is_refused() {
        let mut header = Header::new(FileKind::Snapshot, 0, 1);
        header.drover_version = "99.0.0".into();
        let w = Writer::new(Vec::new(), header, None).unwrap();
        let bytes = w.finish().unwrap().1;
        assert!(matches!(
            Reader::open(&bytes[..], None),
            Err(BackupError::NewerDrover(v)) if v == "99.0.0"
        ));
    }
}
