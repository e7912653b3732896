//! Persist: the stage that commits detected batches ([`stage`]), the batch writer — events,
//! price_history, listing_state, price_alerts in one transaction ([`writer`]) — the window
//! writes ([`windows`]), and the bisecting split that sets refused records apart ([`split`]).

pub mod split;
pub mod stage;
pub mod windows;
pub mod writer;

pub use stage::{DeadLetters, run};
