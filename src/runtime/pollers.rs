//! Starting the marketplace pollers under the supervisor: `source.seatgeek` and
//! `source.ticketmaster`, each when enabled.
//!
//! Each poller is built once, outside its task, so what it must remember across a restart (the
//! Ticketmaster call budget) survives one. A poller that cannot even be built is logged and left
//! out: a source never stops the pipeline.

use std::sync::Arc;

use super::supervisor::Supervisor;
use crate::app::App;
use crate::sources::poll::{self, Poller};
use crate::sources::seatgeek::SeatGeek;
use crate::sources::ticketmaster::Ticketmaster;

/// Spawn every enabled poller.
pub(super) fn spawn(sup: &mut Supervisor, app: &App) {
    let sources = &app.cfg.sources;
    if sources.seatgeek.enabled {
        start(sup, "source.seatgeek", SeatGeek::new(&sources.seatgeek), app);
    }
    if sources.ticketmaster.enabled {
        start(
            sup,
            "source.ticketmaster",
            Ticketmaster::new(&sources.ticketmaster),
            app,
        );
    }
}

fn start<P: Poller>(
    sup: &mut Supervisor,
    task: &'static str,
    poller: Result<P, crate::sources::http::PollError>,
    app: &App,
) {
    let poller = match poller {
        Ok(p) => Arc::new(p),
        Err(error) => {
            tracing::error!(task, error = %crate::logging::chain(&error), "source not started; the rest of ConScope keeps running");
            return;
        }
    };
    let app = app.clone();
    sup.spawn(task, move |cancel| {
        let fut = poll::run(poller.clone(), app.clone(), cancel);
        async move {
            fut.await;
            Ok(())
        }
    });
}
