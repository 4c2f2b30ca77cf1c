//! A loop the service runs beside its actors (the retention sweep, the config
//! watcher). Each takes a stop signal and is stopped and awaited at shutdown, so
//! none outlives the service that started it.

use actix_rt::task::JoinHandle;
use tokio::sync::watch;

/// Handed to a background loop: resolves once the loop must end.
#[derive(Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// Resolves once a stop is asked (or its `Background` was dropped).
    pub async fn stopped(&mut self) {
        // An error means the `Background` is gone: nobody can stop the loop any more.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The tasks of one background job, and the switch that stops them.
pub struct Background {
    name: &'static str,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// A job named `name` (for the log), with no task yet.
    pub fn new(name: &'static str) -> Background {
        Background {
            name,
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// Runs `task` on the current actix System; it must end once its signal resolves.
    pub fn spawn<F>(&mut self, task: impl FnOnce(StopSignal) -> F)
    where
        F: std::future::Future<Output = ()> + 'static,
    {
        let signal = StopSignal(self.stop.subscribe());
        self.tasks.push(actix_rt::spawn(task(signal)));
    }

    /// Asks every task to stop, without waiting: a shutdown asks first, so that a
    /// task winds down while the rest of the service does; `stop` then waits.
    pub fn ask_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops every task and waits until each has ended.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                log::error!("{} ended abnormally: {e}", self.name);
            }
        }
    }
}
