//! A response body that gives up when the upstream stops sending.
//!
//! The route's `timeout` bounds the wait for the response head (awc); this bounds
//! every pause inside the body by the same duration, so an upstream that hangs
//! mid-body cannot hold a connection (and its client) open forever.

use actix_web::web::Bytes;
use awc::error::PayloadError;
use futures_util::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{sleep, Instant, Sleep};

pub struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    expired: bool,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(sleep(timeout)),
            expired: false,
        }
    }
}

impl<S> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(item) => {
                let next = Instant::now() + self.timeout;
                self.deadline.as_mut().reset(next);
                Poll::Ready(item)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.expired = true;
                    tracing::warn!(
                        timeout_ms = self.timeout.as_millis() as u64,
                        "upstream stopped sending its response body; closing"
                    );
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "upstream response body idle",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[actix_web::test]
    async fn a_stalled_body_ends_with_an_error_and_a_flowing_one_passes() {
        let chunk = || Ok::<_, PayloadError>(Bytes::from_static(b"a"));
        let flowing = futures_util::stream::iter(vec![chunk(), chunk(), chunk()]);
        let all: Vec<_> = IdleTimeout::new(flowing, Duration::from_millis(50))
            .collect()
            .await;
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(Result::is_ok));

        let stalled =
            futures_util::stream::iter(vec![chunk()]).chain(futures_util::stream::pending());
        let mut body = IdleTimeout::new(stalled, Duration::from_millis(50));
        assert!(body.next().await.unwrap().is_ok());
        assert!(body.next().await.unwrap().is_err());
        assert!(body.next().await.is_none());
    }
}
