//! The bridges between code that cannot await and the async store: [`wait`] for a plugin's
//! `state` import and the other work that runs on threads made for blocking (never an async
//! worker), and [`Started`] for a commit begun on such a thread and awaited by a task.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

/// Runs `future` to its end: at once when it is ready at once, as the embedded store's snapshot
/// reads are; otherwise by blocking this thread on the runtime. Call it only from a blocking
/// thread (`spawn_blocking`, or a thread that runs plugins).
pub fn wait<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return output;
    }
    tokio::runtime::Handle::current().block_on(future)
}

/// A future started where it was made: polled once at once, so that what it does before its
/// first wait (handing a commit to the store's writer, say) happens there, and finished later,
/// elsewhere.
pub enum Started<T> {
    Done(T),
    Running(Pin<Box<dyn Future<Output = T> + Send>>),
}

impl<T> Started<T> {
    pub fn start(future: impl Future<Output = T> + Send + 'static) -> Self {
        let mut future: Pin<Box<dyn Future<Output = T> + Send>> = Box::pin(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => Started::Done(output),
            Poll::Pending => Started::Running(future),
        }
    }

    pub async fn finish(self) -> T {
        match self {
            Started::Done(output) => output,
            Started::Running(future) => future.await,
        }
    }
}
