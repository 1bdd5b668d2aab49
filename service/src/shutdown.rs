//! The one shutdown signal every long-running task of a server watches.

use tokio::sync::watch;

/// Resolves once shutdown is requested (or the server that could request it is gone). Takes
/// the receiver by value so the future holds no borrow across an await of its caller.
pub async fn requested(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
