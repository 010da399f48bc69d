//! Just enough of the protobuf wire format to read the bodies typed
//! client-go sends (`Content-Type: application/vnd.kubernetes.protobuf`): the
//! `k8s\0` magic, then a `runtime.Unknown` envelope holding apiVersion/kind
//! and the object's own message, which a kind decodes with [`Message`].

use crate::ApiError;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// A decoded message: its fields in order, as (number, value).
#[derive(Debug, Default, Clone)]
pub struct Message<'a>(Vec<(u32, Field<'a>)>);

/// One field's value.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 2: bytes, strings and nested messages.
    Bytes(&'a [u8]),
    /// Wire types 1 and 5.
    Fixed(u64),
}

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("the protobuf body is malformed: {what}"))
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ApiError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint too long"))
}

impl<'a> Message<'a> {
    /// Parse one message.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ApiError> {
        let mut fields = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let tag = varint(buf, &mut pos)?;
            let (number, wire) = ((tag >> 3) as u32, tag & 7);
            let value = match wire {
                0 => Field::Varint(varint(buf, &mut pos)?),
                2 => {
                    let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| bad("length"))?;
                    let end = pos
                        .checked_add(len)
                        .filter(|e| *e <= buf.len())
                        .ok_or_else(|| bad("truncated field"))?;
                    let v = &buf[pos..end];
                    pos = end;
                    Field::Bytes(v)
                }
                1 | 5 => {
                    let n = if wire == 1 { 8 } else { 4 };
                    let end = pos
                        .checked_add(n)
                        .filter(|e| *e <= buf.len())
                        .ok_or_else(|| bad("truncated fixed"))?;
                    let mut v = [0u8; 8];
                    v[..n].copy_from_slice(&buf[pos..end]);
                    pos = end;
                    Field::Fixed(u64::from_le_bytes(v))
                }
                _ => return Err(bad("unsupported wire type")),
            };
            fields.push((number, value));
        }
        Ok(Self(fields))
    }

    /// Every field in wire order.
    pub fn fields(&self) -> impl Iterator<Item = (u32, Field<'a>)> + '_ {
        self.0.iter().copied()
    }

    /// The last varint in field `n`.
    pub fn varint(&self, n: u32) -> Option<u64> {
        self.0.iter().rev().find_map(|(k, v)| match v {
            Field::Varint(x) if *k == n => Some(*x),
            _ => None,
        })
    }

    /// The last string in field `n`, or `""`.
    pub fn string(&self, n: u32) -> Result<String, ApiError> {
        match self.bytes(n) {
            Some(b) => String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8")),
            None => Ok(String::new()),
        }
    }

    /// The last bytes of field `n`.
    pub fn bytes(&self, n: u32) -> Option<&'a [u8]> {
        self.0.iter().rev().find_map(|(k, v)| match v {
            Field::Bytes(b) if *k == n => Some(*b),
            _ => None,
        })
    }

    /// Every bytes value of repeated field `n`.
    pub fn repeated(&self, n: u32) -> Vec<&'a [u8]> {
        self.0
            .iter()
            .filter_map(|(k, v)| match v {
                Field::Bytes(b) if *k == n => Some(*b),
                _ => None,
            })
            .collect()
    }

    /// The nested message in field `n` (empty if absent).
    pub fn message(&self, n: u32) -> Result<Message<'a>, ApiError> {
        self.bytes(n)
            .map(Message::parse)
            .unwrap_or_else(|| Ok(Message::default()))
    }
}

/// Split a protobuf body into (apiVersion, kind, the object's message).
pub fn unwrap_envelope(body: &[u8]) -> Result<(String, String, &[u8]), ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s\\0 prefix"))?;
    let unknown = Message::parse(rest)?;
    let type_meta = unknown.message(1)?;
    Ok((
        type_meta.string(1)?,
        type_meta.string(2)?,
        unknown.bytes(2).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn envelope() {
        let type_meta = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let inner = field(
            2,
            &field(1, &[field(2, b"get"), field(5, b"pods")].concat()),
        );
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &inner)].concat();
        let (api_version, kind, raw) = unwrap_envelope(&body).unwrap();
        assert_eq!(
            (api_version.as_str(), kind.as_str()),
            ("authorization.k8s.io/v1", "SelfSubjectAccessReview")
        );
        let attrs = Message::parse(raw)
            .unwrap()
            .message(2)
            .unwrap()
            .message(1)
            .unwrap();
        assert_eq!(
            (attrs.string(2).unwrap(), attrs.string(5).unwrap()),
            ("get".into(), "pods".into())
        );
        assert!(unwrap_envelope(b"nope").is_err());
        assert!(Message::parse(&[0x0a, 0x05, b'a']).is_err(), "truncated");
    }
}
