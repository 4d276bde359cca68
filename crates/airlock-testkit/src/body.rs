//! Body types shared by the recording upstream and the test client: a whole body, and a body fed
//! chunk by chunk from a channel so that each chunk leaves as its own frame when it is sent.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

/// The body type both sides use: boxed so that full and streamed bodies share one type.
pub(crate) type AnyBody = BoxBody<Bytes, Infallible>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> AnyBody {
    Full::new(bytes.into()).boxed()
}

/// A body that yields each chunk as soon as the timed feeder sends it; nothing is buffered
/// beyond one chunk, so the peer sees the pauses between chunks.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A body that sends each chunk after its delay (measured from the previous chunk). The feeder
/// task stops when the body is dropped, or when `stop` resolves.
pub(crate) fn timed(
    chunks: Vec<(Duration, Bytes)>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> AnyBody {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let feed = async move {
            for (delay, chunk) in chunks {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = feed => {}
            () = stop => {}
        }
    });
    ChannelBody { rx }.boxed()
}
