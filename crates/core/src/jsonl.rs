//! Newline-delimited JSON, as a Kubernetes watch streams it: one place that
//! turns a body's chunks into values, for the server's downstream watches,
//! the web UI's live updates and the benchmarks.

use futures::{Stream, StreamExt};
use serde_json::Value;

/// The JSON values of `body`, one per line. A line that is not JSON is
/// skipped; a body error, the end of the body or a line longer than
/// `max_line` bytes ends the stream.
pub fn values<S, B, E>(body: S, max_line: usize) -> impl Stream<Item = Value> + Send + 'static
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send,
    E: Send,
{
    futures::stream::unfold(
        (Box::pin(body), Vec::new()),
        move |(mut body, mut buf)| async move {
            loop {
                if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let value = serde_json::from_slice::<Value>(&buf[..i]);
                    buf.drain(..=i);
                    match value {
                        Ok(v) => return Some((v, (body, buf))),
                        Err(_) => continue,
                    }
                }
                if buf.len() > max_line {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(chunk.as_ref()),
                    _ => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_across_chunks_skipping_garbage() {
        let chunks: Vec<Result<&'static [u8], ()>> = vec![
            Ok(b"{\"a\":1}\n{\"b\""),
            Ok(b":2}\nnot json\n{\"c\":3}"),
            Ok(b"\n"),
        ];
        let got: Vec<Value> =
            futures::executor::block_on(values(futures::stream::iter(chunks), 1024).collect());
        assert_eq!(
            got,
            vec![
                serde_json::json!({"a": 1}),
                serde_json::json!({"b": 2}),
                serde_json::json!({"c": 3})
            ]
        );
    }

    #[test]
    fn an_overlong_line_ends_the_stream() {
        let chunks: Vec<Result<Vec<u8>, ()>> =
            vec![Ok(b"{\"a\":1}\n".to_vec()), Ok(vec![b'x'; 64])];
        let got: Vec<Value> =
            futures::executor::block_on(values(futures::stream::iter(chunks), 16).collect());
        assert_eq!(got, vec![serde_json::json!({"a": 1})]);
    }
}
