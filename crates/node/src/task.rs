//! Task ownership helpers.

/// A task handle that aborts its task when replaced or dropped, so a background task never
/// outlives the loop that owns it.
#[derive(Debug, Default)]
pub struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    /// Owns `task`.
    pub fn new(task: tokio::task::JoinHandle<()>) -> Self {
        Self(Some(task))
    }

    /// Whether the owned task is still running.
    pub fn is_running(&self) -> bool {
        self.0.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Owns `task` from now on, aborting the task owned before.
    pub fn replace(&mut self, task: tokio::task::JoinHandle<()>) {
        if let Some(old) = self.0.replace(task) {
            old.abort();
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
