//! Traffic policy a director attaches to a call's [`Target`](crate::Target): when to try it
//! again ([`RetryPolicy`]) and how many retries a backend group can take ([`RetryBudget`]).

mod budget;
pub(crate) mod retry;

pub use budget::RetryBudget;
pub use retry::{RetryPolicy, RetryStats};
