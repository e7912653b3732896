//! A marketplace API for the poller tests: the shared fake server answering from a script of
//! canned [`Answer`]s as they are (the last one repeats), with a log of when each request came
//! and what it asked.

use crate::fake_http::{Answer, FakeHttp};

pub type FakeApi = FakeHttp<Answer>;

impl FakeApi {
    /// Serve `script` in order; the last answer repeats for every later request.
    pub async fn start(script: Vec<Answer>) -> Self {
        Self::serve(script, |answer, _| answer).await
    }
}
