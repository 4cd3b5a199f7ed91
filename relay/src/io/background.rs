//! A named background thread that is told to stop through a watch channel and joined when
//! stopped or dropped (the delivery engine, the push notifier).

/// A running background thread.
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts thread `name` running `body`, which gets the receiver that turns `true` when the
    /// thread is to stop.
    ///
    /// # Errors
    /// The thread could not be created.
    pub fn spawn(
        name: &str,
        body: impl FnOnce(tokio::sync::watch::Receiver<bool>) + Send + 'static,
    ) -> std::io::Result<Background> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(stop_rx))?;
        Ok(Background {
            stop,
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.halt();
    }
}
