//! The command line, and the names of what the bench runs: profiles (network
//! conditions), scenarios (what is copied) and tools.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "mirror-bench",
    about = "Benchmark mirror (`mirror copy`, and `mirror IMAGE` into an ECR stand-in) against `skopeo copy --all` on real registries (run as root)"
)]
pub(crate) struct Args {
    /// Network conditions, one or more: loopback-tls and wan-tls (the
    /// headline: HTTPS with a CA made by the bench, HTTP/2 negotiated),
    /// loopback and wan (plain HTTP), where wan puts the source registry in
    /// a network namespace behind a rate limit and an added RTT; ecr (the
    /// headline command `mirror IMAGE` into an ECR stand-in: moto and a
    /// gated registry); fleet (`mirror sync` against `skopeo sync`);
    /// fleet-ecr (the fleet into the ECR stand-in, ECR's blob mounting on
    /// and off); tls (both TLS profiles) or all.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ProfileArg::LoopbackTls])]
    pub(crate) profile: Vec<ProfileArg>,
    /// Runs per scenario; the tables show the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) runs: u32,
    /// The mirror CLI [default: <workspace>/target/release/mirror]. Skipped
    /// (and said so) when it does not exist.
    #[arg(long)]
    pub(crate) mirror: Option<PathBuf>,
    /// The tools to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Tool::Mirror, Tool::Skopeo])]
    pub(crate) tools: Vec<Tool>,
    /// Print markdown tables (for the README) instead of plain text.
    #[arg(long)]
    pub(crate) markdown: bool,
    /// Scenarios to run: python (the python-like index, cold and warm), big
    /// (the 1 GiB image, cold), archive (export to and import from an
    /// oci-archive; loopback profiles only).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = [ScenarioArg::Python, ScenarioArg::Big, ScenarioArg::Archive]
    )]
    pub(crate) scenarios: Vec<ScenarioArg>,
    /// Leave out the 1 GiB image (the same as leaving `big` out of --scenarios).
    #[arg(long)]
    pub(crate) no_big: bool,
    /// WAN: the tbf rate on both ends of the link.
    #[arg(long, default_value = "200mbit")]
    pub(crate) rate: String,
    /// WAN: the round-trip time added by the NFQUEUE program, in ms.
    #[arg(long, default_value_t = 40)]
    pub(crate) rtt_ms: u32,
    /// WAN: a Python with NetfilterQueue installed [default:
    /// <workspace>/.venv/bin/python]. ECR: the `moto_server` beside it, if
    /// there is one, is the default of --moto-server.
    #[arg(long)]
    pub(crate) python: Option<PathBuf>,
    /// ECR: the `moto_server` to run [default: beside --python, else
    /// $MOTO_SERVER, <workspace>/.venv/bin/moto_server or the first on PATH].
    #[arg(long)]
    pub(crate) moto_server: Option<PathBuf>,
    /// Kill a tool run that takes longer than this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub(crate) timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProfileArg {
    LoopbackTls,
    WanTls,
    Loopback,
    Wan,
    Ecr,
    /// `mirror sync` against `skopeo sync` on a fleet, loopback HTTPS.
    Fleet,
    /// The fleet into the ECR stand-in, with blob mounting on and off.
    FleetEcr,
    Tls,
    All,
}

impl ProfileArg {
    /// The profiles named, in the order they run: the loopback ones first,
    /// then the WAN ones (which share one link), then ECR.
    pub(crate) fn expand(args: &[ProfileArg]) -> Vec<Profile> {
        let mut profiles: Vec<Profile> = args
            .iter()
            .flat_map(|arg| match arg {
                ProfileArg::LoopbackTls => vec![Profile::LoopbackTls],
                ProfileArg::WanTls => vec![Profile::WanTls],
                ProfileArg::Loopback => vec![Profile::Loopback],
                ProfileArg::Wan => vec![Profile::Wan],
                ProfileArg::Ecr => vec![Profile::Ecr],
                ProfileArg::Fleet => vec![Profile::Fleet],
                ProfileArg::FleetEcr => vec![Profile::FleetEcr],
                ProfileArg::Tls => vec![Profile::LoopbackTls, Profile::WanTls],
                ProfileArg::All => vec![
                    Profile::LoopbackTls,
                    Profile::WanTls,
                    Profile::Loopback,
                    Profile::Wan,
                    Profile::Ecr,
                    Profile::Fleet,
                    Profile::FleetEcr,
                ],
            })
            .collect();
        profiles.sort_by_key(|p| (p.is_wan(), *p == Profile::Ecr, *p));
        profiles.dedup();
        profiles
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScenarioArg {
    Python,
    Big,
    Archive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Tool {
    Mirror,
    Skopeo,
}

impl Tool {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tool::Mirror => "mirror",
            Tool::Skopeo => "skopeo",
        }
    }
}

/// Network conditions; the report lists them in this order (the TLS
/// profiles are the headline rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Profile {
    LoopbackTls,
    WanTls,
    Loopback,
    Wan,
    Ecr,
    Fleet,
    FleetEcr,
}

impl Profile {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::LoopbackTls => "loopback tls",
            Profile::WanTls => "wan tls",
            Profile::Loopback => "loopback",
            Profile::Wan => "wan",
            Profile::Ecr => "ecr",
            Profile::Fleet => "fleet tls",
            Profile::FleetEcr => "fleet ecr",
        }
    }

    /// Whether the source is the HTTPS registry (the fleet into ECR: its
    /// source is, the stand-in's gate is plain HTTP).
    pub(crate) fn is_tls(self) -> bool {
        matches!(
            self,
            Profile::LoopbackTls | Profile::WanTls | Profile::Fleet | Profile::FleetEcr
        )
    }

    pub(crate) fn is_wan(self) -> bool {
        matches!(self, Profile::WanTls | Profile::Wan)
    }

    pub(crate) fn is_loopback(self) -> bool {
        matches!(self, Profile::LoopbackTls | Profile::Loopback)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scenario {
    PythonCold,
    PythonWarm,
    BigCold,
    ArchiveExport,
    ArchiveImport,
    FleetCold,
    FleetWarm,
    FleetMountsOn,
    FleetMountsOff,
    SignedCold,
    SignedWarm,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::PythonCold => "python cold",
            Scenario::PythonWarm => "python warm",
            Scenario::BigCold => "1 GiB cold",
            Scenario::ArchiveExport => "archive export",
            Scenario::ArchiveImport => "archive import",
            Scenario::FleetCold => "fleet cold",
            Scenario::FleetWarm => "fleet warm",
            Scenario::FleetMountsOn => "fleet cold, mounting on",
            Scenario::FleetMountsOff => "fleet cold, mounting off",
            Scenario::SignedCold => "signed cold",
            Scenario::SignedWarm => "signed warm",
        }
    }
}

/// `loopback / python cold / mirror (run 1/3)`: how a run is named in progress lines.
pub(crate) fn run_label(
    profile: Profile,
    scenario: Scenario,
    tool: Tool,
    run: u32,
    runs: u32,
) -> String {
    format!(
        "{} / {} / {} (run {run}/{runs})",
        profile.name(),
        scenario.name(),
        tool.name()
    )
}
