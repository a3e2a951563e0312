//! The report: the conditions of the run, the table of medians and the
//! mirror/skopeo ratios, as plain text or markdown for the README.

use mirror_testkit::ImageSpec;

use crate::args::{Profile, Tool};
use crate::floor::link_bits_per_second;
use crate::machine::{cpu_model, memory_gib};
use crate::measure::{METHODS, Measurement, Results, median};
use crate::scenarios::Bench;

impl Bench {
    /// Seconds the WAN link needs for `bytes` at its rate; `None` off the
    /// WAN or when nothing moved.
    fn link_floor(&self, profile: Profile, bytes: f64) -> Option<f64> {
        let bits_per_second = link_bits_per_second(&self.args.rate)?;
        (profile.is_wan() && bytes > 0.0).then(|| bytes * 8.0 / bits_per_second)
    }

    /// The link floor of each corpus the WAN profiles copied, for the notes.
    fn link_note(&self, results: &Results) -> Option<String> {
        let mut floors = Vec::new();
        for (&(profile, scenario, _), runs) in &results.runs {
            let bytes = median(runs).bytes;
            if let Some(seconds) = self.link_floor(profile, bytes) {
                let entry = format!("{} {seconds:.2} s", scenario.name());
                if !floors.contains(&entry) {
                    floors.push(entry);
                }
            }
        }
        (!floors.is_empty()).then(|| {
            format!(
                "link floor (distinct blob bytes at {}): {}; `x link` = wall s / link floor",
                self.args.rate,
                floors.join(", ")
            )
        })
    }

    pub(crate) fn report(&self, results: &Results, conditions: &[String]) -> String {
        let md = self.args.markdown;
        let mut out = String::new();
        let date = time::OffsetDateTime::now_utc().date();
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let header = format!(
            "mirror vs skopeo, {date}: {cpus} CPUs ({}), {} GiB RAM, median of {} run(s)",
            cpu_model(),
            memory_gib(),
            self.args.runs
        );
        let mut notes = Vec::new();
        if let Some(calls) = aws_calls_note(results) {
            notes.push(calls);
        }
        if let Some(floor) = &self.floor {
            notes.push(floor.describe());
        }
        if let Some(link) = self.link_note(results) {
            notes.push(link);
        }
        notes.extend(self.skipped.iter().cloned());
        if md {
            out.push_str(&format!("**{header}**\n\n"));
            for condition in conditions {
                out.push_str(&format!("- {condition}\n"));
            }
            out.push_str(&format!(
                "- python: an index of 7 platforms, {:.0} MB of blobs; 1 GiB: one layer; cold = empty destination (skopeo's blob cache hidden), warm = the same copy again; MB/s = blob bytes moved / wall time\n",
                python_mb()
            ));
            if self.reference_archive.is_some() {
                out.push_str(
                    "- archive export: python from the source registry into a new oci-archive file; archive import: python from an oci-archive (written by the bench, the same file for both tools) into the empty destination registry; skopeo's --tmpdir on the same disk as mirror's FILE.partial/\n",
                );
            }
            for note in &notes {
                out.push_str(&format!("- {note}\n"));
            }
            out.push('\n');
        } else {
            out.push_str(&format!("\n{header}\n"));
            for condition in conditions {
                out.push_str(&format!("  {condition}\n"));
            }
            for note in &notes {
                out.push_str(&format!("  {note}\n"));
            }
            out.push('\n');
        }

        let mut table = Table::new(
            3,
            &[
                "profile",
                "scenario",
                "tool",
                "wall s",
                "x link",
                "CPU s",
                "x floor",
                "peak RSS MiB",
                "MB/s",
                "requests",
                "HEAD",
                "GET",
                "PUT",
                "POST",
                "PATCH",
                "other",
                "src / dst",
            ],
        );
        for (&(profile, scenario, tool), runs) in &results.runs {
            let m = median(runs);
            let all = m.all_counts();
            let other: f64 = all
                .iter()
                .filter(|(method, _)| !METHODS.contains(&method.as_str()))
                .map(|(_, n)| n)
                .fold(0.0, |a, b| a + b);
            let mut row = vec![
                profile.name().to_owned(),
                scenario.name().to_owned(),
                tool.name().to_owned(),
                format!("{:.2}", m.wall),
                self.link_floor(profile, m.bytes)
                    .map_or_else(|| "-".to_owned(), |floor| format!("{:.2}", m.wall / floor)),
                format!("{:.2}", m.cpu),
                self.floor.filter(|_| m.bytes > 0.0).map_or_else(
                    || "-".to_owned(),
                    |floor| format!("{:.1}", m.cpu / floor.seconds(m.bytes)),
                ),
                format!("{:.0}", m.rss_mib),
                m.throughput()
                    .map_or_else(|| "-".to_owned(), |t| format!("{t:.0}")),
                count(m.requests()),
            ];
            for method in METHODS {
                row.push(count(all.get(method).copied().unwrap_or_default()));
            }
            row.push(count(other));
            row.push(format!(
                "{} / {}",
                count(Measurement::total(&m.src)),
                count(Measurement::total(&m.dst))
            ));
            table.row(row);
        }
        out.push_str(&table.render(md));

        let mut ratios = Table::new(
            2,
            &["profile", "scenario", "wall", "CPU", "peak RSS", "requests"],
        );
        let mut any_ratio = false;
        for (&(profile, scenario, tool), runs) in &results.runs {
            if tool != Tool::Mirror {
                continue;
            }
            let Some(skopeo) = results.runs.get(&(profile, scenario, Tool::Skopeo)) else {
                continue;
            };
            let (m, s) = (median(runs), median(skopeo));
            any_ratio = true;
            ratios.row(vec![
                profile.name().to_owned(),
                scenario.name().to_owned(),
                ratio(m.wall, s.wall),
                ratio(m.cpu, s.cpu),
                ratio(m.rss_mib, s.rss_mib),
                ratio(m.requests(), s.requests()),
            ]);
        }
        out.push('\n');
        if any_ratio {
            out.push_str(if md {
                "mirror / skopeo (below 1 = mirror uses less):\n\n"
            } else {
                "mirror / skopeo (below 1 = mirror uses less)\n"
            });
            out.push_str(&ratios.render(md));
        } else {
            out.push_str("mirror / skopeo: no ratios (mirror or skopeo did not run)\n");
        }
        if !results.failures.is_empty() {
            out.push_str(&format!(
                "\n{} run(s) FAILED and are not in the medians (see stderr)\n",
                results.failures.len()
            ));
        }
        out
    }
}

/// The AWS API calls of each ECR run (the median per operation), for the
/// notes; `None` when no run made any.
pub(crate) fn aws_calls_note(results: &Results) -> Option<String> {
    let mut parts = Vec::new();
    for (&(profile, scenario, tool), runs) in &results.runs {
        let m = median(runs);
        if profile != Profile::Ecr {
            continue;
        }
        let calls = if m.aws.is_empty() {
            "none".to_owned()
        } else {
            m.aws
                .iter()
                .map(|(action, n)| format!("{action} {}", count(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        parts.push(format!("{} {}: {calls}", scenario.name(), tool.name()));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "ecr: AWS API calls in the timed run (moto's recording; not in the request columns): {}",
            parts.join("; ")
        )
    })
}

pub(crate) fn python_mb() -> f64 {
    let spec = ImageSpec::python_like();
    let bytes: u64 = spec.platforms.iter().flat_map(|p| p.layers.iter()).sum();
    bytes as f64 / 1e6
}

pub(crate) fn summary(m: &Measurement) -> String {
    let throughput = m
        .throughput()
        .map(|t| format!(", {t:.0} MB/s"))
        .unwrap_or_default();
    format!(
        "wall {:.2} s, CPU {:.2} s, peak RSS {:.0} MiB{throughput}, {} requests (src {}, dst {})",
        m.wall,
        m.cpu,
        m.rss_mib,
        count(m.requests()),
        count(Measurement::total(&m.src)),
        count(Measurement::total(&m.dst)),
    )
}

pub(crate) fn count(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        if a == 0.0 {
            "=".to_owned()
        } else {
            "n/a".to_owned()
        }
    } else {
        format!("{:.2}", a / b)
    }
}

pub(crate) struct Table {
    pub(crate) header: Vec<String>,
    /// The first columns hold text (left-aligned), the others numbers.
    pub(crate) text_columns: usize,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(text_columns: usize, header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            text_columns,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub(crate) fn render(&self, markdown: bool) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| r.get(i).map_or(0, String::len))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let numeric = |i: usize| i >= self.text_columns;
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    let width = widths.get(i).copied().unwrap_or(0);
                    if numeric(i) {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                })
                .collect();
            if markdown {
                format!("| {} |\n", padded.join(" | "))
            } else {
                format!("{}\n", padded.join("  ").trim_end())
            }
        };
        let mut out = line(&self.header);
        if markdown {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    if numeric(i) {
                        format!("{}:", "-".repeat(w.max(2) - 1))
                    } else {
                        "-".repeat(w.max(1))
                    }
                })
                .collect();
            out.push_str(&format!("| {} |\n", rule.join(" | ")));
        }
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}
