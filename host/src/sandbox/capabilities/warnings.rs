//! Warnings a guest records with `host.warn`; any warning turns a
//! successful attempt into `warning`. Owns the warning list and its cap.

use crate::sandbox::limits::shorten;

/// Characters kept of one warning.
const MAX_WARNING_CHARS: usize = 4096;

pub struct Warnings {
    kept: Vec<String>,
    max: usize,
    dropped: u64,
}

impl Warnings {
    pub fn new(max: u32) -> Self {
        Warnings {
            kept: Vec::new(),
            max: max as usize,
            dropped: 0,
        }
    }

    pub fn push(&mut self, message: &str) {
        if self.kept.len() < self.max {
            self.kept.push(shorten(message, MAX_WARNING_CHARS));
        } else {
            self.dropped += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The kept warnings, with a last one saying how many were dropped.
    pub fn into_list(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.kept
                .push(format!("{} more warnings were dropped", self.dropped));
        }
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_capped_and_counted() {
        let mut w = Warnings::new(2);
        assert!(w.is_empty());
        for i in 0..5 {
            w.push(&format!("w{i}"));
        }
        assert_eq!(
            w.into_list(),
            vec!["w0", "w1", "3 more warnings were dropped"]
        );
    }
}
