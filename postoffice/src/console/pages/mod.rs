//! One module per console page: [`login`], [`overview`], [`messages`] (search and one
//! message), [`hosts`] (counts, hold, release), [`failed`] (requeue, purge),
//! [`suppressions`] (search, add, remove), [`webhooks`] (endpoints, deliveries, retry),
//! [`dns`] (`keygen dns`'s checks per sending domain).

pub mod dns;
pub mod failed;
pub mod hosts;
pub mod login;
pub mod messages;
pub mod overview;
pub mod suppressions;
pub mod webhooks;
