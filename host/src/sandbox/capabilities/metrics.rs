//! Metrics: counters and durations with tags, aggregated per series.
//!
//! Owns the series of one attempt and the series quota. The WIT calls
//! return nothing, so a bad name or a series over the quota is dropped and
//! counted; the host logs a warning once per cause.

use std::collections::{BTreeMap, HashMap};

use crate::model::report::Metric;
use crate::sandbox::limits::{check_name, shorten};

/// Tags per series; more are refused.
const MAX_TAGS: usize = 32;
/// Bytes per tag value.
const MAX_TAG_VALUE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Counter,
    Duration,
}

#[derive(Debug, Clone, Copy)]
enum Agg {
    Counter(i64),
    Duration {
        count: u64,
        sum: u64,
        min: u64,
        max: u64,
    },
}

type SeriesKey = (Kind, String, BTreeMap<String, String>);

pub struct Metrics {
    series: HashMap<SeriesKey, Agg>,
    order: Vec<SeriesKey>,
    max_series: usize,
    dropped: u64,
}

impl Metrics {
    pub fn new(max_series: u32) -> Self {
        Metrics {
            series: HashMap::new(),
            order: Vec::new(),
            max_series: max_series as usize,
            dropped: 0,
        }
    }

    /// Observations dropped so far (bad names or over the series quota).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn counter(
        &mut self,
        name: &str,
        delta: i64,
        tags: Vec<(String, String)>,
    ) -> Result<(), String> {
        let agg = self.entry(Kind::Counter, name, tags)?;
        if let Agg::Counter(v) = agg {
            *v = v.saturating_add(delta);
        }
        Ok(())
    }

    pub fn duration(
        &mut self,
        name: &str,
        nanos: u64,
        tags: Vec<(String, String)>,
    ) -> Result<(), String> {
        let agg = self.entry(Kind::Duration, name, tags)?;
        if let Agg::Duration {
            count,
            sum,
            min,
            max,
        } = agg
        {
            *count += 1;
            *sum = sum.saturating_add(nanos);
            *min = (*min).min(nanos);
            *max = (*max).max(nanos);
        }
        Ok(())
    }

    fn entry(
        &mut self,
        kind: Kind,
        name: &str,
        tags: Vec<(String, String)>,
    ) -> Result<&mut Agg, String> {
        let result = Self::key(kind, name, tags);
        let key = match result {
            Ok(key) => key,
            Err(e) => {
                self.dropped += 1;
                return Err(e);
            }
        };
        if !self.series.contains_key(&key) {
            if self.series.len() >= self.max_series {
                self.dropped += 1;
                return Err(format!(
                    "metric series quota of {} reached; {:?} dropped",
                    self.max_series,
                    shorten(name, 64)
                ));
            }
            let fresh = match kind {
                Kind::Counter => Agg::Counter(0),
                Kind::Duration => Agg::Duration {
                    count: 0,
                    sum: 0,
                    min: u64::MAX,
                    max: 0,
                },
            };
            self.order.push(key.clone());
            self.series.insert(key.clone(), fresh);
        }
        Ok(self.series.get_mut(&key).expect("inserted above"))
    }

    fn key(kind: Kind, name: &str, tags: Vec<(String, String)>) -> Result<SeriesKey, String> {
        check_name("metric", name)?;
        if tags.len() > MAX_TAGS {
            return Err(format!(
                "metric {name:?} has {} tags; at most {MAX_TAGS} are allowed",
                tags.len()
            ));
        }
        let mut map = BTreeMap::new();
        for (k, v) in tags {
            check_name("tag", &k)?;
            if v.len() > MAX_TAG_VALUE {
                return Err(format!(
                    "tag {k:?} of metric {name:?} has a value over {MAX_TAG_VALUE} bytes"
                ));
            }
            map.insert(k, v);
        }
        Ok((kind, name.to_string(), map))
    }

    /// The series in the order they first appeared.
    pub fn into_report(mut self) -> Vec<Metric> {
        self.order
            .into_iter()
            .map(|key| {
                let agg = self
                    .series
                    .remove(&key)
                    .expect("every key in order is a series");
                let (_, name, tags) = key;
                match agg {
                    Agg::Counter(value) => Metric::Counter { name, tags, value },
                    Agg::Duration {
                        count,
                        sum,
                        min,
                        max,
                    } => Metric::Duration {
                        name,
                        tags,
                        count,
                        sum_ns: sum,
                        min_ns: min,
                        max_ns: max,
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn series_aggregate_by_name_and_tags() {
        let mut m = Metrics::new(10);
        m.counter("rows", 2, tags(&[("k", "v")])).unwrap();
        m.counter("rows", 1, tags(&[("k", "v")])).unwrap();
        m.counter("rows", 5, vec![]).unwrap();
        m.duration("work", 10, vec![]).unwrap();
        m.duration("work", 30, vec![]).unwrap();
        let r = m.into_report();
        assert_eq!(r.len(), 3);
        assert!(matches!(&r[0], Metric::Counter { value: 3, tags, .. } if tags["k"] == "v"));
        assert!(matches!(&r[1], Metric::Counter { value: 5, .. }));
        assert!(matches!(
            &r[2],
            Metric::Duration {
                count: 2,
                sum_ns: 40,
                min_ns: 10,
                max_ns: 30,
                ..
            }
        ));
    }

    #[test]
    fn series_over_the_quota_and_bad_names_are_dropped() {
        let mut m = Metrics::new(2);
        m.counter("a", 1, vec![]).unwrap();
        m.counter("b", 1, vec![]).unwrap();
        assert!(m.counter("c", 1, vec![]).unwrap_err().contains("quota"));
        m.counter("a", 1, vec![]).unwrap(); // an existing series still counts
        assert!(m.counter("bad name", 1, vec![]).is_err());
        assert!(m.counter("a", 1, tags(&[("bad key", "v")])).is_err());
        assert_eq!(m.dropped(), 3);
        assert_eq!(m.into_report().len(), 2);
    }
}
