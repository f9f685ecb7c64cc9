//! The crash-loop breaker of one plugin: after `breaker_faults` faults in a row at one
//! hook (a plugin that crashes at every MAIL is in a loop even if its connect hook works)
//! it is switched off for `breaker_cooldown` (its `on_error` answers without a call), then
//! one call is tried (half open): a success closes it, a fault opens it again. A reload
//! makes new plugins, so SIGHUP closes every breaker.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Breaker {
    faults: u32,
    cooldown: Duration,
    /// Set (under the lock) while `state` is not the default: a plugin with no recent
    /// fault is called and counted without taking the lock.
    marked: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Faults in a row, per hook.
    in_a_row: std::collections::HashMap<&'static str, u32>,
    /// Open until then; past it, one call is let through.
    open_until: Option<Instant>,
    /// That one call is in progress: others are still refused.
    trying: bool,
}

/// May the plugin be called?
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Call,
    /// Switched off: answer per `on_error` without a call.
    Open,
}

impl Breaker {
    pub fn new(faults: u32, cooldown: Duration) -> Breaker {
        Breaker {
            faults,
            cooldown,
            marked: AtomicBool::new(false),
            state: Mutex::default(),
        }
    }

    pub fn gate(&self) -> Gate {
        if !self.marked.load(Ordering::Acquire) {
            return Gate::Call;
        }
        let mut s = self.state.lock().expect("breaker lock");
        match s.open_until {
            None => Gate::Call,
            Some(until) if Instant::now() >= until && !s.trying => {
                s.trying = true;
                Gate::Call
            }
            Some(_) => Gate::Open,
        }
    }

    /// A call at `hook` went through: that hook's run of faults ends, and a breaker
    /// that was tried closes.
    pub fn success(&self, hook: &'static str) {
        if !self.marked.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.state.lock().expect("breaker lock");
        if s.trying {
            *s = State::default();
        } else {
            s.in_a_row.remove(hook);
        }
        if s.in_a_row.is_empty() && s.open_until.is_none() {
            self.marked.store(false, Ordering::Release);
        }
    }

    /// A call at `hook` faulted: `true` when that switches the plugin off (now, or again
    /// after the one call tried).
    pub fn fault(&self, hook: &'static str) -> bool {
        if self.faults == 0 {
            return false;
        }
        let mut s = self.state.lock().expect("breaker lock");
        self.marked.store(true, Ordering::Release);
        let in_a_row = s.in_a_row.entry(hook).or_default();
        *in_a_row += 1;
        let full = *in_a_row >= self.faults;
        let opens = s.trying || (s.open_until.is_none() && full);
        if opens {
            s.open_until = Some(Instant::now() + self.cooldown);
            s.trying = false;
        }
        opens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_faults_in_a_row_and_tries_once_after_the_cooldown() {
        let b = Breaker::new(3, Duration::from_millis(30));
        assert!(!b.fault("mail") && !b.fault("mail"));
        b.success("mail");
        assert!(!b.fault("mail") && !b.fault("mail"));
        // Another hook working does not end MAIL's run.
        b.success("connect");
        assert!(b.fault("mail"), "the third in a row");
        assert_eq!(b.gate(), Gate::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.gate(), Gate::Call, "half open");
        assert_eq!(b.gate(), Gate::Open, "one call at a time");
        assert!(b.fault("mail"), "the try failed: open again");
        assert_eq!(b.gate(), Gate::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.gate(), Gate::Call);
        b.success("connect");
        assert_eq!(b.gate(), Gate::Call);
        assert_eq!(b.gate(), Gate::Call);
        let never = Breaker::new(0, Duration::from_secs(1));
        assert!((0..10).all(|_| !never.fault("mail")));
    }
}
