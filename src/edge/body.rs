//! Reading a request body with bounds: every pause is limited by
//! `server.request_body_timeout` (a client that promises a body and stops sending it
//! gets 408 instead of holding a worker's connection forever) and the total by the
//! endpoint's limit (413). The same guard serves bodies read into memory and bodies
//! streamed to an upstream; for the latter, [`BodyFault`] tells afterwards why the
//! stream broke, so the proxy answers 408/413 rather than 502.

use crate::error::Error;
use actix_web::error::PayloadError;
use actix_web::web::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{sleep, Sleep};

/// Why a guarded body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// No byte arrived for the idle timeout.
    Stalled,
    /// More bytes than the limit.
    TooLarge { limit: u64 },
}

impl From<BodyFault> for Error {
    fn from(fault: BodyFault) -> Error {
        match fault {
            BodyFault::Stalled => Error::BodyTimeout,
            BodyFault::TooLarge { limit } => Error::BodyTooLarge { limit },
        }
    }
}

/// Where a [`GuardedBody`] records its fault, readable after the stream was handed away.
#[derive(Debug, Clone, Default)]
pub struct FaultSlot(Rc<Cell<Option<BodyFault>>>);

impl FaultSlot {
    pub fn get(&self) -> Option<BodyFault> {
        self.0.get()
    }
}

/// A request body stream bounded in time (per pause) and size.
pub struct GuardedBody<S> {
    inner: S,
    idle: Duration,
    /// Armed when the body is waited for, disarmed when a chunk arrives: the clock
    /// runs only while spa-bff is waiting for the client, not while it is busy.
    deadline: Option<Pin<Box<Sleep>>>,
    limit: u64,
    seen: u64,
    fault: FaultSlot,
}

impl<S> GuardedBody<S> {
    pub fn new(inner: S, idle: Duration, limit: u64) -> Self {
        GuardedBody {
            inner,
            idle,
            deadline: None,
            limit,
            seen: 0,
            fault: FaultSlot::default(),
        }
    }

    /// Where the fault, if any, will be recorded.
    pub fn fault(&self) -> FaultSlot {
        self.fault.clone()
    }

    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.fault.0.set(Some(fault));
        let err = match fault {
            BodyFault::Stalled => PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request body stalled",
            )),
            BodyFault::TooLarge { .. } => PayloadError::Overflow,
        };
        Poll::Ready(Some(Err(err)))
    }
}

impl<S> Stream for GuardedBody<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.fault.get().is_some() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.deadline = None;
                self.seen += chunk.len() as u64;
                if self.seen > self.limit {
                    let limit = self.limit;
                    return self.fail(BodyFault::TooLarge { limit });
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                let idle = self.idle;
                let deadline = self.deadline.get_or_insert_with(|| Box::pin(sleep(idle)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => self.fail(BodyFault::Stalled),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Reads a whole (small) body into memory, bounded like [`GuardedBody`].
pub async fn read_all<S>(body: S, idle: Duration, limit: u64) -> Result<Bytes, Error>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let mut guarded = GuardedBody::new(body, idle, limit);
    let mut buf = BytesMut::new();
    while let Some(chunk) = guarded.next().await {
        match chunk {
            Ok(c) => buf.extend_from_slice(&c),
            Err(e) => {
                return Err(match guarded.fault().get() {
                    Some(fault) => fault.into(),
                    None => Error::Forbidden(format!("unreadable request body: {e}").into()),
                })
            }
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize) -> Result<Bytes, PayloadError> {
        Ok(Bytes::from(vec![b'a'; n]))
    }

    #[actix_web::test]
    async fn a_body_that_stalls_or_overflows_is_cut_off_with_its_reason() {
        let whole = futures_util::stream::iter(vec![chunk(3), chunk(4)]);
        let body = read_all(whole, Duration::from_millis(50), 7).await.unwrap();
        assert_eq!(body.len(), 7);

        let too_big = futures_util::stream::iter(vec![chunk(3), chunk(5)]);
        let err = read_all(too_big, Duration::from_millis(50), 7)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BodyTooLarge { limit: 7 }), "{err:?}");

        let stalled =
            futures_util::stream::iter(vec![chunk(3)]).chain(futures_util::stream::pending());
        let err = read_all(stalled, Duration::from_millis(50), 7)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BodyTimeout), "{err:?}");
    }
}
