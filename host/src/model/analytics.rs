//! Execution analytics: figures per time bucket and in total, from one
//! compact row per execution. Pure: the store reads the rows (one indexed
//! range scan), this adds them up, so every rule here is tested on rows the
//! test writes.
//!
//! An execution counts in the bucket of its creation (a cohort): its final
//! state, duration and usage are its own, whenever it ended.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::clock::rfc3339_micros;
use super::state::ExecutionState;

/// One execution, as analytics need it. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub created_ms: i64,
    /// When its first attempt started.
    pub started_ms: Option<i64>,
    pub state: ExecutionState,
    pub duration_ms: Option<f64>,
    pub task_id: String,
    /// The kind of its error, when it failed.
    pub error_kind: Option<String>,
    pub attempts: u64,
    pub task_runs: u64,
    pub fuel: u64,
    pub memory_peak_bytes: u64,
}

/// The width of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Bucket {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Bucket> {
        match s {
            "1m" => Some(Bucket::Minute),
            "1h" => Some(Bucket::Hour),
            "1d" => Some(Bucket::Day),
            _ => None,
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            Bucket::Minute => 60_000,
            Bucket::Hour => 3_600_000,
            Bucket::Day => 86_400_000,
        }
    }
}

/// Most buckets one answer holds.
pub const MAX_BUCKETS: i64 = 10_000;

/// Percentiles and extremes of a set of durations, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Spread {
    pub min: f64,
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Spread {
    /// Of `values`, or none when empty (sorts them).
    fn of(values: &mut [f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        Some(Spread {
            min: values[0],
            avg: values.iter().sum::<f64>() / n as f64,
            p50: nearest_rank(values, 0.50),
            p95: nearest_rank(values, 0.95),
            max: values[n - 1],
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty `values`.
fn nearest_rank(values: &[f64], p: f64) -> f64 {
    let rank = (p * values.len() as f64).ceil().max(1.0) as usize;
    values[rank.min(values.len()) - 1]
}

/// The figures of a set of executions (a bucket, or all of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Figures {
    /// Executions created.
    pub started: u64,
    /// Of those, the ended ones by final state (`SUCCESS`, `WARNING`,
    /// `FAILED`, `KILLED`).
    pub finished: BTreeMap<String, u64>,
    /// Ended well (SUCCESS or WARNING) over ended; null when none ended.
    pub success_rate: Option<f64>,
    /// Failed executions by their error's kind.
    pub failures: BTreeMap<String, u64>,
    /// Duration of the ended ones, ms.
    pub duration_ms: Option<Spread>,
    /// Creation to first attempt's start, ms.
    pub queue_wait_ms: Option<Spread>,
    /// Attempts over task runs.
    pub attempts_per_task_run: Option<f64>,
    pub fuel: u64,
    /// The largest memory an attempt used, bytes.
    pub memory_peak_bytes: u64,
    /// The average of the executions' largest memory, bytes.
    pub memory_avg_bytes: Option<f64>,
}

#[derive(Default)]
struct Tally {
    started: u64,
    finished: BTreeMap<String, u64>,
    failures: BTreeMap<String, u64>,
    durations: Vec<f64>,
    waits: Vec<f64>,
    attempts: u64,
    task_runs: u64,
    fuel: u64,
    memory_peak: u64,
    memory_sum: f64,
}

impl Tally {
    fn add(&mut self, r: &Row) {
        self.started += 1;
        if r.state.is_terminal() {
            *self
                .finished
                .entry(r.state.as_str().to_string())
                .or_default() += 1;
            if let Some(d) = r.duration_ms {
                self.durations.push(d);
            }
        }
        if r.state == ExecutionState::Failed {
            let kind = r.error_kind.clone().unwrap_or_else(|| "unknown".into());
            *self.failures.entry(kind).or_default() += 1;
        }
        if let Some(s) = r.started_ms {
            self.waits.push((s - r.created_ms).max(0) as f64);
        }
        self.attempts += r.attempts;
        self.task_runs += r.task_runs;
        self.fuel += r.fuel;
        self.memory_peak = self.memory_peak.max(r.memory_peak_bytes);
        self.memory_sum += r.memory_peak_bytes as f64;
    }

    fn figures(mut self) -> Figures {
        let ended: u64 = self.finished.values().sum();
        let well = ["SUCCESS", "WARNING"]
            .iter()
            .filter_map(|s| self.finished.get(*s))
            .sum::<u64>();
        Figures {
            started: self.started,
            success_rate: (ended > 0).then(|| well as f64 / ended as f64),
            finished: self.finished,
            failures: self.failures,
            duration_ms: Spread::of(&mut self.durations),
            queue_wait_ms: Spread::of(&mut self.waits),
            attempts_per_task_run: (self.task_runs > 0)
                .then(|| self.attempts as f64 / self.task_runs as f64),
            fuel: self.fuel,
            memory_peak_bytes: self.memory_peak,
            memory_avg_bytes: (self.started > 0).then(|| self.memory_sum / self.started as f64),
        }
    }
}

/// One bucket's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BucketFigures {
    /// Where the bucket starts (RFC 3339, UTC).
    pub start: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A task among the busiest or most failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopTask {
    pub task_id: String,
    /// Its name now, when the task still exists.
    pub name: Option<String>,
    pub executions: u64,
    pub failures: u64,
}

/// `GET /analytics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Analytics {
    pub since: String,
    pub until: String,
    pub bucket: Bucket,
    /// Every bucket from `since` to `until`, empty ones included.
    pub buckets: Vec<BucketFigures>,
    pub totals: Figures,
    /// The ten tasks with the most executions, then the ten with the most
    /// failed ones (those with none left out).
    pub top_by_volume: Vec<TopTask>,
    pub top_by_failures: Vec<TopTask>,
}

/// Tasks listed in each top list.
const TOP: usize = 10;

/// The figures of `rows` (executions created in `[since_ms, until_ms)`) in
/// buckets of `bucket`, aligned to whole minutes, hours or UTC days.
pub fn summarize(rows: &[Row], since_ms: i64, until_ms: i64, bucket: Bucket) -> Analytics {
    let width = bucket.millis();
    let first = since_ms.div_euclid(width) * width;
    let count = ((until_ms - first) + width - 1).div_euclid(width).max(0) as usize;
    let mut tallies: Vec<Tally> = (0..count).map(|_| Tally::default()).collect();
    let mut total = Tally::default();
    let mut tasks: HashMap<&str, (u64, u64)> = HashMap::new();
    for r in rows {
        let i = (r.created_ms - first).div_euclid(width);
        if let Some(t) = usize::try_from(i).ok().and_then(|i| tallies.get_mut(i)) {
            t.add(r);
        }
        total.add(r);
        let task = tasks.entry(&r.task_id).or_default();
        task.0 += 1;
        task.1 += u64::from(r.state == ExecutionState::Failed);
    }
    let buckets = tallies
        .into_iter()
        .enumerate()
        .map(|(i, t)| BucketFigures {
            start: rfc3339_micros((first + i as i64 * width) * 1000),
            figures: t.figures(),
        })
        .collect();
    let mut top: Vec<TopTask> = tasks
        .into_iter()
        .map(|(task_id, (executions, failures))| TopTask {
            task_id: task_id.to_string(),
            name: None,
            executions,
            failures,
        })
        .collect();
    top.sort_by(|a, b| {
        b.executions
            .cmp(&a.executions)
            .then_with(|| a.task_id.cmp(&b.task_id))
    });
    let top_by_volume = top.iter().take(TOP).cloned().collect();
    top.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then_with(|| a.task_id.cmp(&b.task_id))
    });
    let top_by_failures = top
        .into_iter()
        .filter(|t| t.failures > 0)
        .take(TOP)
        .collect();
    Analytics {
        since: rfc3339_micros(since_ms * 1000),
        until: rfc3339_micros(until_ms * 1000),
        bucket,
        buckets,
        totals: total.figures(),
        top_by_volume,
        top_by_failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_028_800_000; // 2025-11-25T00:00:00Z

    fn row(created: i64, state: ExecutionState, duration: f64, task: &str) -> Row {
        Row {
            created_ms: created,
            started_ms: state.is_terminal().then_some(created + 10),
            state,
            duration_ms: state.is_terminal().then_some(duration),
            task_id: task.into(),
            error_kind: (state == ExecutionState::Failed).then(|| "action_fatal".into()),
            attempts: 1,
            task_runs: 1,
            fuel: 100,
            memory_peak_bytes: 1 << 20,
        }
    }

    #[test]
    fn figures_add_up_per_bucket_and_in_total() {
        use ExecutionState::*;
        let h = 3_600_000;
        let mut rows = vec![
            row(T0 + 5, Success, 10.0, "a"),
            row(T0 + 6, Success, 20.0, "a"),
            row(T0 + 7, Failed, 30.0, "b"),
            row(T0 + 8, Running, 0.0, "a"),
            row(T0 + 2 * h + 1, Killed, 40.0, "b"),
        ];
        rows[1].attempts = 3; // two retries
        rows[1].memory_peak_bytes = 4 << 20;
        rows[2].started_ms = Some(T0 + 7 + 1000);
        let a = summarize(&rows, T0, T0 + 3 * h, Bucket::Hour);
        assert_eq!(a.buckets.len(), 3, "empty buckets included");
        assert_eq!(a.buckets[0].start, "2025-11-25T00:00:00.000000Z");
        assert_eq!(a.buckets[2].start, "2025-11-25T02:00:00.000000Z");

        let b0 = &a.buckets[0].figures;
        assert_eq!(b0.started, 4);
        assert_eq!(
            b0.finished,
            BTreeMap::from([("SUCCESS".into(), 2), ("FAILED".into(), 1)])
        );
        assert_eq!(b0.success_rate, Some(2.0 / 3.0));
        assert_eq!(b0.failures, BTreeMap::from([("action_fatal".into(), 1)]));
        let d = b0.duration_ms.as_ref().unwrap();
        assert_eq!(
            (d.min, d.avg, d.p50, d.p95, d.max),
            (10.0, 20.0, 20.0, 30.0, 30.0)
        );
        let w = b0.queue_wait_ms.as_ref().unwrap();
        assert_eq!((w.p50, w.p95, w.max), (10.0, 1000.0, 1000.0));
        assert_eq!(b0.attempts_per_task_run, Some(6.0 / 4.0));
        assert_eq!(b0.fuel, 400);
        assert_eq!(b0.memory_peak_bytes, 4 << 20);

        let b1 = &a.buckets[1].figures;
        assert_eq!(
            (b1.started, b1.success_rate, b1.duration_ms.clone()),
            (0, None, None)
        );
        assert_eq!(
            a.buckets[2].figures.finished,
            BTreeMap::from([("KILLED".into(), 1)])
        );

        assert_eq!(a.totals.started, 5);
        assert_eq!(a.totals.success_rate, Some(2.0 / 4.0));
        let volume: Vec<(&str, u64)> = a
            .top_by_volume
            .iter()
            .map(|t| (t.task_id.as_str(), t.executions))
            .collect();
        assert_eq!(volume, [("a", 3), ("b", 2)]);
        let failing: Vec<(&str, u64)> = a
            .top_by_failures
            .iter()
            .map(|t| (t.task_id.as_str(), t.failures))
            .collect();
        assert_eq!(failing, [("b", 1)], "tasks without failures left out");
    }

    #[test]
    fn buckets_align_to_whole_units_and_percentiles_are_nearest_rank() {
        let a = summarize(&[], T0 + 90_000, T0 + 3 * 60_000 + 1, Bucket::Minute);
        let starts: Vec<&str> = a.buckets.iter().map(|b| b.start.as_str()).collect();
        assert_eq!(
            starts,
            [
                "2025-11-25T00:01:00.000000Z",
                "2025-11-25T00:02:00.000000Z",
                "2025-11-25T00:03:00.000000Z"
            ]
        );
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Spread::of(&mut v).unwrap();
        assert_eq!((s.p50, s.p95, s.max), (50.0, 95.0, 100.0));
        let mut one = [7.0];
        assert_eq!(Spread::of(&mut one).unwrap().p95, 7.0);
    }
}
