//! Full-jitter exponential back-off inside one wall-clock deadline, honouring Retry-After;
//! refusals for load (a 429, AWS throttling behind a login) spread the retries over a window
//! that grows with them instead (docs/fleet.md: a fleet booting at once).
//!
//! Every network step of a run shares one deadline (`retry.deadline`), so the whole job ends
//! close to it whatever fails; each attempt gets at most the time that is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First back-off cap; doubles each attempt up to `max_delay`.
const BASE_DELAY: Duration = Duration::from_millis(200);
/// The spread after the second refusal for load; grows by half with each one after it (6, 9,
/// 13.5 s), up to `max_delay` (the first refusal is spread over BASE_DELAY only: a lone client
/// that meets one 429 comes back at its Retry-After).
const REFUSAL_SPREAD: Duration = Duration::from_secs(6);
/// The pause after a refusal is drawn from the upper part of the spread: this share of it is
/// the least added to Retry-After (docs/fleet.md: why not full jitter, why not the upper half).
const REFUSAL_FLOOR: (u32, u32) = (3, 5);
/// An attempt with less time than this left is not started: it could not finish.
const MIN_ATTEMPT: Duration = Duration::from_millis(250);
/// Sleeps are cut in slices this long so that a cancelled run stops promptly.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

/// Time as a policy sees it: the real clock, or (in tests) one that moves only when slept on,
/// so that a test of the deadline takes no time.
#[derive(Clone)]
enum Clock {
    Real,
    #[cfg(test)]
    Manual {
        now: Arc<std::sync::Mutex<Instant>>,
        slept: Arc<std::sync::Mutex<Vec<Duration>>>,
    },
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            #[cfg(test)]
            Clock::Manual { now, .. } => *now.lock().unwrap(),
        }
    }

    fn sleep(&self, d: Duration) {
        match self {
            Clock::Real => std::thread::sleep(d),
            #[cfg(test)]
            Clock::Manual { now, slept } => {
                *now.lock().unwrap() += d;
                slept.lock().unwrap().push(d);
            }
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Give up now: retrying cannot help.
    Fatal,
    /// Try again after a back-off, at least `retry_after` when the server said so.
    Transient { retry_after: Option<Duration> },
    /// Refused for load (a rate limit's 429, AWS throttling behind Vault): try again after
    /// `retry_after` (if sent) plus a spread that grows with the `weight` of every refusal seen.
    Refused {
        retry_after: Option<Duration>,
        weight: u32,
    },
}

/// Why a retried operation did not succeed.
#[derive(Debug)]
pub enum Failure<E> {
    /// A fatal error.
    Fatal(E),
    /// The deadline passed; the last transient error.
    Exhausted { last: E },
    /// Another part of the run failed and asked everyone to stop.
    Cancelled,
}

impl<E> Failure<E> {
    pub fn into_error(self) -> Option<E> {
        match self {
            Failure::Fatal(e) | Failure::Exhausted { last: e, .. } => Some(e),
            Failure::Cancelled => None,
        }
    }
}

/// The shared retry budget of one run.
#[derive(Clone)]
pub struct Policy {
    pub deadline: Instant,
    pub max_delay: Duration,
    pub cancel: Arc<AtomicBool>,
    /// Whether a stop signal ends it too (not for a revoke: the token must still go).
    heeds_stop: bool,
    clock: Clock,
}

impl Policy {
    /// A budget of `budget` from `start`. Durations are capped when the configuration is read,
    /// so the sum always fits; were it ever not to, the run gets no time rather than a panic.
    pub fn starting(start: Instant, budget: Duration, max_delay: Duration) -> Self {
        Policy::new(start.checked_add(budget).unwrap_or(start), max_delay)
    }

    pub fn new(deadline: Instant, max_delay: Duration) -> Self {
        Policy {
            deadline,
            max_delay,
            cancel: Arc::new(AtomicBool::new(false)),
            heeds_stop: true,
            clock: Clock::Real,
        }
    }

    /// A policy that a stop signal does not cancel: for the revoke, which a stopping run still
    /// makes within its own short deadline.
    pub fn unstoppable(deadline: Instant, max_delay: Duration) -> Self {
        Policy {
            heeds_stop: false,
            ..Policy::new(deadline, max_delay)
        }
    }

    /// A policy on a manual clock that starts now and moves only by the policy's own sleeps;
    /// the sleeps are recorded.
    #[cfg(test)]
    fn manual(
        deadline: Duration,
        max_delay: Duration,
    ) -> (Self, Arc<std::sync::Mutex<Vec<Duration>>>) {
        let start = Instant::now();
        let slept = Arc::new(std::sync::Mutex::new(Vec::new()));
        let clock = Clock::Manual {
            now: Arc::new(std::sync::Mutex::new(start)),
            slept: slept.clone(),
        };
        let policy = Policy {
            clock,
            ..Policy::new(start + deadline, max_delay)
        };
        (policy, slept)
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(self.clock.now())
    }

    /// Another part of the run failed, or (unless `unstoppable`) a stop signal came.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
            || (self.heeds_stop && crate::stop::requested().is_some())
    }

    pub fn cancel_all(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The back-off before attempt `attempt + 1` (0-based): uniform in [0, cap], cap doubling
    /// from BASE_DELAY up to max_delay; with Retry-After, that long plus the jitter.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let cap = BASE_DELAY
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_delay);
        let jitter = random_below(cap);
        match retry_after {
            None => jitter,
            Some(after) => after.saturating_add(jitter).min(after.max(self.max_delay)),
        }
    }

    /// The pause after refusals for load of total weight `refused`: Retry-After (a floor) plus
    /// a draw from the upper 40 % of a spread that grows by half with each refusal, up to
    /// max_delay. Many clients refused at once (a fleet booting together, each told
    /// "Retry-After: 1") would come back together: drawn over a growing spread they come back
    /// at a rate that falls as the refusals pile up, and the upper part keeps even the early
    /// draws from bunching at the floor, which full jitter (its mean half the cap) would do.
    pub fn refusal_delay(&self, refused: u32, retry_after: Option<Duration>) -> Duration {
        let spread = refusal_spread(refused).min(self.max_delay);
        let (floor, of) = REFUSAL_FLOOR;
        let least = spread.saturating_mul(floor) / of;
        let after = retry_after.unwrap_or(Duration::ZERO);
        let pause = after
            .saturating_add(least)
            .saturating_add(random_below(spread.saturating_sub(least)));
        pause.min(after.max(self.max_delay))
    }

    /// Runs `op` (given the time left) until it succeeds, fails fatally, or time runs out.
    pub fn run<T, E>(
        &self,
        mut op: impl FnMut(Duration) -> Result<T, E>,
        mut classify: impl FnMut(&E) -> Verdict,
    ) -> Result<T, Failure<E>> {
        // Failures the server scheduled (Retry-After: a rate limit's 429, a planned 503) do not
        // grow the back-off: the server said when to come back. Escalating on them made a
        // later blind failure (a 5xx without Retry-After) wait up to max_delay, and spread
        // rate-limited retries far wider than the capacity the server announced. Refusals for
        // load grow a spread of their own (see `refusal_delay`).
        let mut blind = 0u32;
        let mut refused = 0u32;
        loop {
            if self.cancelled() {
                return Err(Failure::Cancelled);
            }
            let left = self.remaining();
            let error = match op(left) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let (retry_after, load) = match classify(&error) {
                Verdict::Fatal => return Err(Failure::Fatal(error)),
                Verdict::Transient { retry_after } => (retry_after, None),
                Verdict::Refused {
                    retry_after,
                    weight,
                } => (retry_after, Some(weight)),
            };
            let left = self.remaining();
            if left < MIN_ATTEMPT * 2 {
                return Err(Failure::Exhausted { last: error });
            }
            let pause = match load {
                Some(weight) => {
                    refused = refused.saturating_add(weight);
                    self.refusal_delay(refused, retry_after)
                }
                None => {
                    let pause = self.delay(blind, retry_after);
                    if retry_after.is_none() {
                        blind += 1;
                    }
                    pause
                }
            };
            self.sleep(pause.min(left - MIN_ATTEMPT));
        }
    }

    fn sleep(&self, total: Duration) {
        let mut left = total;
        while !left.is_zero() && !self.cancelled() {
            let slice = left.min(SLEEP_SLICE);
            self.clock.sleep(slice);
            left -= slice;
        }
    }
}

/// The spread after refusals of total weight `refused`: BASE_DELAY for the first, then
/// REFUSAL_SPREAD times 1.5 for each one after the second (integer steps: no float code).
fn refusal_spread(refused: u32) -> Duration {
    match refused {
        0 | 1 => BASE_DELAY,
        // Past 1.5^8 (x 25) the spread is beyond any sensible max_delay.
        n => {
            let k = (n - 2).min(8);
            REFUSAL_SPREAD.saturating_mul(3u32.pow(k)) / 2u32.pow(k)
        }
    }
}

/// A uniformly random duration in [0, cap] from the OS generator.
fn random_below(cap: Duration) -> Duration {
    let nanos = cap.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        return cap / 2;
    }
    Duration::from_nanos(u64::from_le_bytes(bytes) % (nanos + 1))
}

/// Parses a Retry-After header: delay-seconds (HTTP dates are not sent by Vault or IMDS).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recording(deadline: Duration) -> (Policy, Arc<Mutex<Vec<Duration>>>) {
        Policy::manual(deadline, Duration::from_secs(20))
    }

    #[test]
    fn backoff_caps_grow_and_stay_within_max_delay() {
        let policy = Policy::new(Instant::now(), Duration::from_secs(2));
        for attempt in 0..30 {
            let cap = (BASE_DELAY * (1 << attempt.min(20))).min(Duration::from_secs(2));
            for _ in 0..20 {
                assert!(policy.delay(attempt, None) <= cap);
            }
        }
        // Jitter is real: not every draw is the same.
        let draws: std::collections::BTreeSet<_> = (0..20).map(|_| policy.delay(5, None)).collect();
        assert!(draws.len() > 10);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let policy = Policy::new(Instant::now(), Duration::from_secs(20));
        for _ in 0..50 {
            let d = policy.delay(0, Some(Duration::from_secs(3)));
            assert!(
                d >= Duration::from_secs(3) && d <= Duration::from_secs(20),
                "{d:?}"
            );
        }
        // A Retry-After beyond max_delay is still honoured.
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn transient_errors_are_retried_until_success() {
        let (policy, slept) = recording(Duration::from_secs(60));
        let mut calls = 0;
        let result: Result<u32, Failure<&str>> = policy.run(
            |_| {
                calls += 1;
                if calls < 4 {
                    Err("503")
                } else {
                    Ok(7)
                }
            },
            |_| Verdict::Transient { retry_after: None },
        );
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls, 4);
        assert!(!slept.lock().unwrap().is_empty());
    }

    #[test]
    fn fatal_errors_stop_at_once() {
        let (policy, _) = recording(Duration::from_secs(60));
        let mut calls = 0;
        let result: Result<(), Failure<&str>> = policy.run(
            |_| {
                calls += 1;
                Err("403")
            },
            |_| Verdict::Fatal,
        );
        assert!(matches!(result, Err(Failure::Fatal("403"))));
        assert_eq!(calls, 1);
    }

    #[test]
    fn no_budget_or_retry_after_overflows() {
        let policy = Policy::starting(Instant::now(), Duration::MAX, Duration::from_secs(20));
        assert_eq!(
            policy.remaining(),
            Duration::ZERO,
            "no time rather than a panic"
        );
        assert_eq!(policy.delay(8, Some(Duration::MAX)), Duration::MAX);
    }

    #[test]
    fn deadline_ends_the_retries() {
        let (policy, slept) =
            Policy::manual(Duration::from_millis(1500), Duration::from_millis(300));
        let mut calls = 0;
        let result: Result<(), Failure<&str>> = policy.run(
            |_| {
                calls += 1;
                Err("down")
            },
            |_| Verdict::Transient { retry_after: None },
        );
        // On the policy's clock: it kept trying until one more attempt could not fit.
        let elapsed: Duration = slept.lock().unwrap().iter().sum();
        assert!(matches!(result, Err(Failure::Exhausted { last: "down" })));
        assert!(calls > 2, "{calls} attempts");
        assert!(elapsed <= Duration::from_millis(1500), "{elapsed:?}");
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    }

    #[test]
    fn cancel_stops_other_workers() {
        let (policy, _) = recording(Duration::from_secs(60));
        policy.cancel_all();
        let result: Result<(), Failure<&str>> = policy.run(|_| Ok(()), |_| Verdict::Fatal);
        assert!(matches!(result, Err(Failure::Cancelled)));
    }

    #[test]
    fn retry_after_does_not_grow_the_back_off() {
        let (policy, slept) = recording(Duration::from_secs(600));
        let mut calls = 0;
        let result: Result<(), Failure<u16>> = policy.run(
            |_| {
                calls += 1;
                match calls {
                    1..=8 => Err(429),
                    9 => Err(503),
                    _ => Ok(()),
                }
            },
            |e| Verdict::Transient {
                retry_after: (*e == 429).then(|| Duration::from_secs(1)),
            },
        );
        assert!(result.is_ok());
        let total: Duration = slept.lock().unwrap().iter().sum();
        // Eight times 1 s plus at most 200 ms of jitter each, then a first back-off of at most 200 ms.
        assert!(total >= Duration::from_secs(8), "{total:?}");
        assert!(total <= Duration::from_millis(8 * 1200 + 200), "{total:?}");
    }

    /// The pauses a run of `failures` made before its success, on the manual clock (each
    /// attempt is given the time left: the pauses are the differences).
    fn pauses(
        max_delay: Duration,
        failures: &[u16],
        classify: impl Fn(u16) -> Verdict,
    ) -> Vec<Duration> {
        let (policy, _) = Policy::manual(Duration::from_secs(3600), max_delay);
        let mut lefts = Vec::new();
        let result: Result<(), Failure<u16>> = policy.run(
            |left| {
                lefts.push(left);
                failures.get(lefts.len() - 1).map_or(Ok(()), |e| Err(*e))
            },
            |e| classify(*e),
        );
        assert!(result.is_ok());
        lefts.windows(2).map(|w| w[0] - w[1]).collect()
    }

    #[test]
    fn refusals_for_load_spread_ever_wider_above_retry_after() {
        let ms = Duration::from_millis;
        let verdict = |e: u16| match e {
            429 => Verdict::Refused {
                retry_after: Some(Duration::from_secs(1)),
                weight: 1,
            },
            400 => Verdict::Refused {
                retry_after: None,
                weight: 2,
            },
            _ => Verdict::Transient { retry_after: None },
        };
        let failures = [429, 429, 429, 429, 429, 429, 429, 503];
        let got = pauses(Duration::from_secs(20), &failures, verdict);
        // Retry-After (1 s) plus the upper 40 % of a spread of 200 ms (the first refusal: a
        // lone client comes back at Retry-After), then 6, 9, 13.5 s and max_delay, the whole
        // pause never beyond max_delay; the 503 that follows is the first blind failure.
        let expected = [
            (ms(1120), ms(1200)),
            (ms(4600), ms(7000)),
            (ms(6400), ms(10000)),
            (ms(9100), ms(14500)),
            (ms(13000), ms(20000)),
            (ms(13000), ms(20000)),
            (ms(13000), ms(20000)),
            (ms(0), ms(200)),
        ];
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for (i, (pause, (low, high))) in got.iter().zip(expected).enumerate() {
            assert!(
                low <= *pause && *pause <= high,
                "pause {i}: {pause:?} not in [{low:?}, {high:?}] ({got:?})"
            );
        }
        // AWS throttling (no Retry-After) weighs two: its first pause is the second step's.
        let got = pauses(Duration::from_secs(20), &[400, 400], verdict);
        assert!(got[0] >= ms(3600) && got[0] <= ms(6000), "{got:?}");
        assert!(got[1] >= ms(8100) && got[1] <= ms(13500), "{got:?}");
        // Retry-After beyond max_delay is still honoured: a floor, never capped.
        let policy = Policy::new(Instant::now(), Duration::from_secs(20));
        let after = Some(Duration::from_secs(30));
        assert!(policy.refusal_delay(9, after) >= Duration::from_secs(30));
    }

    /// Many draws per step: each pause lies in the upper 40 % of its spread, over Retry-After,
    /// and the draws fill that part (its lower end is reached, not just respected).
    #[test]
    fn refusal_pauses_fill_the_upper_forty_percent_of_a_spread_growing_by_half() {
        let policy = Policy::new(Instant::now(), Duration::from_secs(20));
        let after = Duration::from_secs(1);
        // Step 5's spread (20.25 s) is capped at max_delay, and so is the whole pause.
        let spreads_ms = [(1, 200), (2, 6000), (3, 9000), (4, 13500), (5, 20000)];
        for (refused, spread_ms) in spreads_ms {
            let spread = Duration::from_millis(spread_ms);
            let max_delay = Duration::from_secs(20);
            let (low, high) = (after + spread * 3 / 5, (after + spread).min(max_delay));
            let draws: Vec<Duration> = (0..300)
                .map(|_| policy.refusal_delay(refused, Some(after)))
                .collect();
            let least = *draws.iter().min().unwrap();
            let most = *draws.iter().max().unwrap();
            assert!(
                low <= least && most <= high,
                "{refused}: {least:?}..{most:?}"
            );
            assert!(
                least < low + spread / 20,
                "{refused}: lowest draw {least:?}"
            );
            assert!(
                most > high - spread / 20,
                "{refused}: highest draw {most:?}"
            );
        }
    }

    #[test]
    fn retry_after_parses_seconds() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
