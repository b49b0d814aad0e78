//! The one bridge from code that cannot await to the async store: a plugin's `state` import
//! and the other work that runs on threads made for blocking (never an async worker).

use std::future::Future;
use std::pin::pin;
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
