//! At most so many bounces per envelope sender per interval (issue 11 F4).
//!
//! A bounce goes to the envelope sender, which the poster chooses: a host key holder (or a
//! forged post through an open mailman) can aim bounces at a victim, signed with our DKIM
//! key. This limiter caps how many bounces one address gets from this worker process in a
//! fixed window; over the cap the failures are still recorded in the failed tube, only the
//! bounce is left out. The first refusal of a window is logged (once per sender per
//! interval) and every refusal counts in `hedwig_worker_bounces_limited_total`.
//!
//! The count is per worker process (several workers each allow the cap). Memory is bounded:
//! at most [`MAX_SENDERS`] addresses are tracked; when full, expired windows are dropped,
//! then the oldest window.
//!
//! Not here: whether a bounce is due at all ([`crate::plan`]), building it
//! (`hedwig_message::dsn`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Senders tracked at once.
pub const MAX_SENDERS: usize = 100_000;

/// What to do with one bounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Over the limit: do not send. `first` is true for the first refusal of this sender's
    /// window (log it then).
    Refuse { first: bool },
}

#[derive(Debug)]
struct Window {
    start: Instant,
    sent: u32,
    refused: bool,
}

/// Bounces per envelope sender per interval.
#[derive(Debug)]
pub struct SenderLimiter {
    max: u32,
    interval: Duration,
    windows: Mutex<HashMap<String, Window>>,
}

impl SenderLimiter {
    /// At most `max` bounces per sender per `interval`; `max == 0` means no limit.
    pub fn new(max: u32, interval: Duration) -> SenderLimiter {
        SenderLimiter {
            max,
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a bounce to `sender` may go now (and counts it when it may).
    pub fn check(&self, sender: &str, now: Instant) -> Verdict {
        if self.max == 0 {
            return Verdict::Send;
        }
        let key = sender.trim().to_ascii_lowercase();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if !windows.contains_key(&key) && windows.len() >= MAX_SENDERS {
            let interval = self.interval;
            windows.retain(|_, w| now.duration_since(w.start) < interval);
            if windows.len() >= MAX_SENDERS {
                let oldest = windows
                    .iter()
                    .min_by_key(|(_, w)| w.start)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    windows.remove(&oldest);
                }
            }
        }
        let window = windows.entry(key).or_insert(Window {
            start: now,
            sent: 0,
            refused: false,
        });
        if now.duration_since(window.start) >= self.interval {
            *window = Window {
                start: now,
                sent: 0,
                refused: false,
            };
        }
        if window.sent < self.max {
            window.sent += 1;
            Verdict::Send
        } else {
            let first = !window.refused;
            window.refused = true;
            Verdict::Refuse { first }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_sender_per_window() {
        let l = SenderLimiter::new(2, Duration::from_secs(3600));
        let t0 = Instant::now();
        assert_eq!(l.check("a@x.test", t0), Verdict::Send);
        assert_eq!(l.check("A@X.test", t0), Verdict::Send);
        assert_eq!(l.check("a@x.test", t0), Verdict::Refuse { first: true });
        assert_eq!(l.check("a@x.test", t0), Verdict::Refuse { first: false });
        assert_eq!(l.check("b@x.test", t0), Verdict::Send);
        // A new window.
        let t1 = t0 + Duration::from_secs(3600);
        assert_eq!(l.check("a@x.test", t1), Verdict::Send);
        assert_eq!(l.check("a@x.test", t1), Verdict::Send);
        assert_eq!(l.check("a@x.test", t1), Verdict::Refuse { first: true });
    }

    #[test]
    fn zero_is_no_limit() {
        let l = SenderLimiter::new(0, Duration::from_secs(1));
        for _ in 0..1000 {
            assert_eq!(l.check("a@x.test", Instant::now()), Verdict::Send);
        }
    }

    #[test]
    fn memory_is_bounded() {
        let l = SenderLimiter::new(1, Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..MAX_SENDERS + 10 {
            l.check(
                &format!("s{i}@x.test"),
                t0 + Duration::from_micros(i as u64),
            );
        }
        assert_eq!(l.windows.lock().unwrap().len(), MAX_SENDERS);
        // The newest are still counted.
        let last = format!("s{}@x.test", MAX_SENDERS + 9);
        assert_eq!(
            l.check(&last, t0 + Duration::from_secs(1)),
            Verdict::Refuse { first: true }
        );
    }
}
