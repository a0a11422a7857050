//! `read_body`'s minimum rate, on tokio's paused clock: a trickle is cut off soon after its
//! grace, a steady body is not, and the deadline still bounds everything.

use bytes::Bytes;
use http_body::{Body, Frame};
use retry_safe_core::body::{read_body, BodyError, BodyLimits};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// `chunks` chunks of `size` bytes, one every `every`.
struct Trickle {
    left: usize,
    size: usize,
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

fn trickle(chunks: usize, size: usize, every: Duration) -> Trickle {
    Trickle {
        left: chunks,
        size,
        every,
        sleep: Box::pin(tokio::time::sleep(every)),
    }
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.left -= 1;
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.size])))))
    }
}

use std::future::Future;

#[tokio::test(start_paused = true)]
async fn a_body_trickling_a_byte_a_second_is_cut_off_after_the_grace() {
    let limits =
        BodyLimits::new(1000, Duration::from_secs(60)).min_rate(1024, Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    let read = read_body(trickle(1000, 1, Duration::from_secs(1)), Some(1000), limits).await;
    assert_eq!(
        read,
        Err(BodyError::TooSlow {
            bytes_per_sec: 1024
        })
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_above_the_rate_is_read_whole() {
    let limits =
        BodyLimits::new(64 * 1024, Duration::from_secs(60)).min_rate(1024, Duration::from_secs(2));
    // 32 KiB at 4 KiB every 500 ms: 8 KiB/s.
    let read = read_body(trickle(8, 4096, Duration::from_millis(500)), None, limits).await;
    assert_eq!(read.map(|b| b.len()), Ok(32 * 1024));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_still_bounds_a_body_that_keeps_the_rate() {
    let limits =
        BodyLimits::new(1 << 20, Duration::from_secs(3)).min_rate(1024, Duration::from_secs(1));
    let read = read_body(trickle(100, 4096, Duration::from_millis(500)), None, limits).await;
    assert_eq!(
        read,
        Err(BodyError::TimedOut {
            after: Duration::from_secs(3)
        })
    );
}
