//! A scenario's JSON report: the machine, the settings, each measured row beside its floor, and
//! each target with whether this run met it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Error;
use crate::loadgen::Figures;

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub machine: Machine,
    pub settings: serde_json::Value,
    pub rows: Vec<Row>,
    /// Figures that are not a latency row (memory, start-up times).
    pub rows_extra: Vec<serde_json::Value>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub at: String,
}

impl Machine {
    pub fn here() -> Self {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            at: chrono::Utc::now().to_rfc3339(),
        }
    }
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub shape: &'static str,
    pub what: &'static str,
    pub figures: Figures,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub measured: f64,
    pub wanted: String,
    pub met: bool,
}

impl Target {
    /// A ratio that must reach `at_least`.
    pub fn at_least(name: impl Into<String>, measured: f64, at_least: f64) -> Self {
        Target { name: name.into(), measured, wanted: format!(">= {at_least}"), met: measured >= at_least }
    }

    /// A ratio that must stay within `at_most`.
    pub fn at_most(name: impl Into<String>, measured: f64, at_most: f64) -> Self {
        Target { name: name.into(), measured, wanted: format!("<= {at_most}"), met: measured <= at_most }
    }
}

impl Report {
    pub fn new(scenario: &'static str, settings: serde_json::Value) -> Self {
        Report {
            scenario,
            machine: Machine::here(),
            settings,
            rows: Vec::new(),
            rows_extra: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// Records a row and prints it.
    pub fn row(&mut self, shape: &'static str, what: &'static str, figures: Figures) -> Figures {
        println!(
            "  {shape:<10} {what:<34} {:>9.0}/s  p50 {:>8.1}µs  p99 {:>8.1}µs  max {:>9.1}µs  errors {}",
            figures.per_second, figures.p50_us, figures.p99_us, figures.max_us, figures.errors
        );
        self.rows.push(Row { shape, what, figures: figures.clone() });
        figures
    }

    pub fn target(&mut self, target: Target) {
        println!(
            "  target {:<58} {:>7.2} (wanted {}) {}",
            target.name,
            target.measured,
            target.wanted,
            if target.met { "met" } else { "MISSED" }
        );
        self.targets.push(target);
    }

    pub fn write(&self, dir: &Path, name: &str) -> Result<PathBuf, Error> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(self)?)?;
        Ok(path)
    }
}
