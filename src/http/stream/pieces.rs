//! A stream's outgoing bytes, handed to the HTTP dispatcher in pieces small enough for its write
//! buffer.
//!
//! actix-http copies each chunk of a streaming body into the connection's write buffer (8 KiB to
//! begin with) and keeps whatever capacity that buffer grew to, up to 128 KiB, for the life of the
//! connection. A stream's first frame (the snapshot: every gate with its recent entries) is
//! often larger than 8 KiB, so every viewer kept a write buffer of twice that for as long as it
//! watched — half of what a viewer cost. Here a chunk larger than [`PIECE`] goes out piece by
//! piece, and after each piece the dispatcher is told to come back (a self-wake and `Pending`),
//! so it writes that piece to the socket before taking the next: the buffer never grows for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// The largest piece handed over at once: with what may already wait in the buffer, well under
/// its initial 8 KiB.
pub const PIECE: usize = 4096;

pub struct Pieces<S> {
    inner: S,
    /// What is left of the chunk being handed over.
    rest: Bytes,
    /// A piece was just handed over: let the dispatcher write it before the next.
    yielded: bool,
}

impl<S> Pieces<S> {
    pub fn new(inner: S) -> Self {
        Pieces { inner, rest: Bytes::new(), yielded: false }
    }

    fn next_piece(&mut self) -> Bytes {
        let piece = self.rest.split_to(self.rest.len().min(PIECE));
        self.yielded = !self.rest.is_empty();
        piece
    }
}

impl<S, E> Stream for Pieces<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.rest.is_empty() {
            if std::mem::take(&mut this.yielded) {
                // The dispatcher stops taking chunks on `Pending` and writes what it holds.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(Some(Ok(this.next_piece())));
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) if chunk.len() > PIECE => {
                this.rest = chunk;
                Poll::Ready(Some(Ok(this.next_piece())))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use futures_util::task::noop_waker_ref;

    /// Polls to the end, recording each piece and how many times the stream asked to be polled
    /// again before the next.
    fn drain(chunks: Vec<Bytes>) -> (Vec<Bytes>, usize) {
        let mut stream = Pieces::new(futures_util::stream::iter(chunks.into_iter().map(Ok::<_, ()>)));
        let mut cx = Context::from_waker(noop_waker_ref());
        let (mut pieces, mut pauses) = (Vec::new(), 0);
        loop {
            match stream.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(Ok(piece))) => pieces.push(piece),
                Poll::Ready(Some(Err(()))) | Poll::Ready(None) => return (pieces, pauses),
                Poll::Pending => pauses += 1,
            }
        }
    }

    #[test]
    fn a_large_chunk_goes_in_pieces_with_a_pause_between_and_nothing_lost() {
        let big: Bytes = (0..10_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
        let small = Bytes::from_static(b"frame");
        let (pieces, pauses) = drain(vec![small.clone(), big.clone(), small.clone()]);
        let sizes: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![5, PIECE, PIECE, 10_000 - 2 * PIECE, 5]);
        // The dispatcher is sent back to write between the pieces of one chunk, not elsewhere.
        assert_eq!(pauses, 2);
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let expected: Vec<u8> = [small.as_ref(), big.as_ref(), small.as_ref()].concat();
        assert_eq!(joined, expected);
    }

    #[test]
    fn chunks_up_to_a_piece_pass_unchanged() {
        let exact = Bytes::from(vec![7u8; PIECE]);
        let (pieces, pauses) = drain(vec![exact.clone(), Bytes::from_static(b"x")]);
        assert_eq!(pieces, vec![exact, Bytes::from_static(b"x")]);
        assert_eq!(pauses, 0);
    }
}
