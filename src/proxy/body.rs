//! Reading a whole body (a request the parse step needs, an answer to validate or restore,
//! an upstream error) without copying it when it came in one piece, as small bodies do:
//! the piece is kept as it is (a reference into hyper's read buffer), and only a body of
//! several pieces is joined.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

use crate::tls::client::BoxError;

/// Why [`collect`] gave up.
#[derive(Debug)]
pub enum CollectError {
    /// More than the limit.
    TooLarge,
    /// The body failed.
    Read(BoxError),
}

/// The data of a body so far.
#[derive(Debug, Default)]
pub struct Kept {
    /// The first piece, while there is only one.
    one: Option<Bytes>,
    /// All pieces, once there is more than one.
    many: BytesMut,
}

// === impl Kept ===

impl Kept {
    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.one.as_ref().map_or(self.many.len(), Bytes::len)
    }

    /// Nothing kept yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the next piece.
    pub fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if self.many.is_empty() {
            match self.one.take() {
                None => return self.one = Some(piece),
                Some(first) => {
                    self.many.reserve(first.len() + piece.len());
                    self.many.extend_from_slice(&first);
                }
            }
        }
        self.many.extend_from_slice(&piece);
    }

    /// All of it, as one slice.
    pub fn as_slice(&self) -> &[u8] {
        self.one.as_deref().unwrap_or(&self.many)
    }

    /// All of it.
    pub fn into_bytes(self) -> Bytes {
        match self.one {
            Some(b) => b,
            None => self.many.freeze(),
        }
    }
}

/// Reads a whole body of at most `limit` bytes.
pub async fn collect<B>(mut body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut kept = Kept::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Read(e.into()))?;
        if let Ok(d) = frame.into_data() {
            if kept.len() + d.len() > limit {
                return Err(CollectError::TooLarge);
            }
            kept.push(d);
        }
    }
    Ok(kept.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};
    use proptest::prelude::*;

    fn pieces(p: Vec<Vec<u8>>) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        StreamBody::new(futures_util::stream::iter(
            p.into_iter()
                .map(|v| Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(v)))),
        ))
    }

    #[tokio::test]
    async fn one_piece_is_kept_without_a_copy() {
        let b = Bytes::from_static(b"{\"a\":1}");
        let out = collect(Full::new(b.clone()), 100).await.unwrap();
        assert_eq!(out, b);
        assert_eq!(out.as_ptr(), b.as_ptr(), "the piece itself, not a copy");
    }

    #[tokio::test]
    async fn over_the_limit_is_refused() {
        let r = collect(pieces(vec![vec![1; 60], vec![2; 41]]), 100).await;
        assert!(matches!(r, Err(CollectError::TooLarge)));
        let r = collect(pieces(vec![vec![1; 60], vec![2; 40]]), 100).await;
        assert_eq!(r.unwrap().len(), 100);
    }

    proptest! {
        /// However the body is cut, the whole is what was sent.
        #[test]
        fn pieces_join_in_order(p in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8)) {
            let whole: Vec<u8> = p.concat();
            let mut kept = Kept::default();
            for x in &p {
                kept.push(Bytes::from(x.clone()));
                prop_assert_eq!(kept.len(), kept.as_slice().len());
            }
            prop_assert_eq!(kept.as_slice(), &whole[..]);
            prop_assert_eq!(kept.is_empty(), whole.is_empty());
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let out = rt.block_on(collect(pieces(p), usize::MAX)).unwrap();
            prop_assert_eq!(&out[..], &whole[..]);
        }
    }
}
