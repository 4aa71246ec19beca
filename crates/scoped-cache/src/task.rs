//! Tasks that end with their owner.

/// A spawned task aborted when this handle is dropped: a background loop that ends with
/// the tier that owns it, an execution that ends when its request stops waiting for it
/// (so a hung handler never runs on unseen).
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
