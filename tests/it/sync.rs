//! `mirror sync FILE`: the walkthrough as one file against the ECR stand-in,
//! tag selection over one listing, a cheap warm run, failures that stay
//! their own, the source pull budget, the plan, and file errors that point
//! at `FILE:LINE:COL`.

use std::path::{Path, PathBuf};

use mirror_testkit::{
    EcrOptions, Fault, GeneratedImage, ImageSpec, PushAuth, Registry, RequestRecord, Rule,
    open_layout,
};
use serde_json::Value;

use crate::ecr::{Aws, aws, mutability};
use crate::support::{
    Mirror, Scratch, assert_landed, assert_no_manifest, describe, fetch, image, is_ping, is_write,
    num, open_registry, proxy_to, seed, small_image, text,
};

const ANON: PushAuth = PushAuth::Anonymous;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A sync file written into `scratch`.
pub(crate) fn sync_file(scratch: &Scratch, name: &str, text: &str) -> String {
    let path = scratch.path().join(name);
    std::fs::write(&path, text).expect("write the sync file");
    path.display().to_string()
}

/// A sync file's text: every image to `target`, one entry per item of
/// `images`, `from: SOURCE/ITEM` (an item may go on with more keys, each on a
/// line of its own).
fn fleet(target: &str, source: &str, images: &[&str]) -> String {
    let mut yaml = format!("defaults:\n  target: {target}\nimages:\n");
    for image in images {
        yaml.push_str(&format!("  - from: {source}/{image}\n"));
    }
    yaml
}

/// A sync file of [`fleet`] written into `scratch`.
fn fleet_file(
    scratch: &Scratch,
    name: &str,
    target: &str,
    source: &str,
    images: &[&str],
) -> String {
    sync_file(scratch, name, &fleet(target, source, images))
}

/// `mirror sync FILE ARGS... --insecure-registry HOST...`.
pub(crate) fn sync<'a>(
    file: &str,
    hosts: &[String],
    args: impl IntoIterator<Item = &'a str>,
) -> Mirror {
    let mut run = Mirror::new(["sync", file]).args(args);
    for host in hosts {
        run = run.args(["--insecure-registry", host]);
    }
    run
}

/// The `state` of every tag of a run report, by destination.
fn states(report: &Value) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = report["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no tags: {report:#}"))
        .iter()
        .map(|t| {
            (
                text(t, "/destination").to_owned(),
                text(t, "/state").to_owned(),
            )
        })
        .collect();
    states.sort();
    states
}

fn manifest_heads(requests: &[RequestRecord]) -> usize {
    requests
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.contains("/manifests/") && r.status != 401)
        .count()
}

fn manifest_gets(requests: &[RequestRecord]) -> usize {
    requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/manifests/") && r.status != 401)
        .count()
}

/// The seed walkthrough in one file: cruddur-python from Docker Hub's
/// python:3.10-slim-buster (every platform), backend-flask and
/// frontend-react-js from local OCI layouts, MUTABLE repositories, log
/// group `cruddur` with 1 day; everything read back through moto and the
/// registry. Run again, it spends no pull and writes nothing; with
/// `--referrers none`, it sends one HEAD per tag per side and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_file_lands_everything_and_a_rerun_is_one_head_per_tag_per_side() {
    let aws = aws(EcrOptions::default()).await;
    let python = aws.hub.seed_python().await.expect("seed python");
    let file = fixtures().join("walkthrough.yaml").display().to_string();

    let out = aws.mirror(["sync", &file, "--json"]).run().await;
    out.expect_success();
    let report = out.json();
    let host = aws.ecr.registry_host();
    assert_eq!(
        states(&report),
        vec![
            (format!("{host}/backend-flask:latest"), "copied".to_owned()),
            (
                format!("{host}/cruddur-python:3.10-slim-buster"),
                "copied".to_owned()
            ),
            (
                format!("{host}/frontend-react-js:latest"),
                "copied".to_owned()
            ),
        ],
        "{report:#}"
    );
    aws.assert_landed("cruddur-python", "3.10-slim-buster", &python)
        .await;
    for app in ["backend-flask", "frontend-react-js"] {
        let layout =
            open_layout(&fixtures().join("walkthrough").join(app)).expect("fixture layout");
        aws.assert_landed(app, "latest", &layout).await;
    }
    for repository in ["cruddur-python", "backend-flask", "frontend-react-js"] {
        let found = aws
            .repository(repository)
            .await
            .unwrap_or_else(|| panic!("{repository} was created"));
        assert_eq!(mutability(&found), "MUTABLE", "{repository}");
    }
    let groups = aws
        .moto
        .describe_log_groups("cruddur")
        .await
        .expect("moto answers");
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["retentionInDays"], 1);
    assert_eq!(report["log_groups"][0]["created"], true, "{report:#}");

    // A warm run: every tag up to date, and at ECR only its HEAD. What it
    // returns: the report and the hub's requests (handshakes left out).
    let warm_run = |extra: &'static [&'static str]| {
        let (aws, file) = (&aws, &file);
        async move {
            aws.ecr.clear_requests();
            aws.hub.clear_requests();
            let out = aws
                .mirror(["sync", file.as_str(), "--json"])
                .args(extra.iter().copied())
                .run()
                .await;
            out.expect_success();
            let report = out.json();
            assert!(
                states(&report).iter().all(|(_, s)| s == "up-to-date"),
                "{report:#}"
            );
            let answered = |requests: Vec<RequestRecord>| -> Vec<RequestRecord> {
                requests
                    .into_iter()
                    .filter(|r| r.status != 401 && !is_ping(r))
                    .collect()
            };
            let ecr = answered(aws.ecr.requests());
            assert_eq!(manifest_heads(&ecr), 3, "{}", describe(&ecr));
            assert_eq!(ecr.len(), 3, "only the HEADs: {}", describe(&ecr));
            let hub = answered(aws.hub.requests());
            assert_eq!(manifest_heads(&hub), 1, "{}", describe(&hub));
            (report, hub)
        }
    };

    // Warm, referrers on (the default): the look-up for referrers added
    // since the last run costs, at a source without the referrers API and
    // without referrer tags, one probe and one tag listing per repository,
    // and nothing at the destination: no pull, no write.
    let (_, hub) = warm_run(&[]).await;
    assert_eq!(
        manifest_gets(&hub),
        0,
        "a warm run spent a pull: {}",
        describe(&hub)
    );
    let lookups: Vec<&RequestRecord> = hub.iter().filter(|r| r.method != "HEAD").collect();
    assert!(
        lookups.len() <= 2
            && lookups
                .iter()
                .all(|r| r.path.contains("/referrers/") || r.path.ends_with("/tags/list")),
        "more than a probe and a listing: {}",
        describe(&hub)
    );

    // Warm with `--referrers none`: one HEAD per tag per side, nothing else
    // at either registry.
    let (report, hub) = warm_run(&["--referrers", "none"]).await;
    assert_eq!(hub.len(), 1, "only the HEAD: {}", describe(&hub));
    // Each tag reports its own calls, not the run's.
    for tag in report["tags"].as_array().expect("tags") {
        let from_hub = text(tag, "/source").contains("python");
        assert_eq!(
            num(tag, "/calls/source_manifest_heads"),
            u64::from(from_hub)
        );
        assert_eq!(num(tag, "/calls/destination_manifest_heads"), 1, "{tag:#}");
        assert_eq!(num(tag, "/calls/source_manifest_gets"), 0, "{tag:#}");
    }
}

/// Errors in the file are exit 2 with `FILE:LINE:COL` and what was
/// expected, before any registry is asked anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_errors_point_at_file_line_and_column() {
    let scratch = Scratch::new("sync-errors");
    // 127.0.0.1:9 answers nothing: a test that got past the file would fail.
    for (name, yaml, position, says) in [
        (
            "unknown-key.yaml",
            "images:\n  - from: alpine\n    too: x\n",
            ":3:5",
            "unknown field `too`",
        ),
        (
            "wrong-type.yaml",
            "images:\n  - from: alpine\n    platforms: linux/amd64\n",
            ":3:16",
            "sequence",
        ),
        (
            "bad-platform.yaml",
            "images:\n  - from: alpine\n    platforms: [linux]\n",
            ":3:17",
            "expected os/arch",
        ),
        (
            "bad-range.yaml",
            "images:\n  - from: node\n    tags: { semver: \">=banana\" }\n",
            ":3:11",
            "not a version range",
        ),
        (
            "bad-regex.yaml",
            "images:\n  - from: node\n    tags: { regex: '3.(' }\n",
            ":3:11",
            "not a regular expression",
        ),
        (
            "tag-and-selection.yaml",
            "images:\n  - from: node:20\n    tags: [\"20\", \"21\"]\n",
            ":2:11",
            "names one tag",
        ),
        (
            "bad-target.yaml",
            "defaults:\n  target: oci:/tmp/x:latest\nimages:\n  - from: node\n",
            ":2:11",
            "whole layout",
        ),
        (
            "duplicate.yaml",
            "defaults:\n  target: 127.0.0.1:9/mirror\nimages:\n  - from: 127.0.0.1:9/a/python\n    tags: [\"3.10\"]\n  - from: 127.0.0.1:9/a/python\n    tags: [\"3.11\", \"3.10\"]\n",
            ":6:5",
            "two entries write 127.0.0.1:9/mirror/a/python:3.10",
        ),
        (
            "duplicate-renamed.yaml",
            "defaults:\n  target: 127.0.0.1:9\nimages:\n  - from: 127.0.0.1:9/a/python:3.10\n    to: python\n  - from: 127.0.0.1:9/b/python:3.10\n    to: python\n",
            ":6:5",
            "(the other is at",
        ),
    ] {
        let file = sync_file(&scratch, name, yaml);
        let out = Mirror::new(["sync", file.as_str()]).run().await;
        out.expect_code(2);
        out.expect_error_line();
        assert!(
            out.stderr.contains(&format!("{file}{position}")) && out.stderr.contains(says),
            "{name}: expected `{file}{position}` and `{says}`\n{}",
            out.describe()
        );
    }
    // Standard input is `<stdin>`.
    let mut run = tokio::process::Command::new(crate::support::MIRROR);
    run.args(["sync", "-f", "-"])
        .env("HOME", scratch.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = run.spawn().expect("run mirror");
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"images:\n  - form: alpine\n")
            .await
            .expect("write stdin");
    }
    let output = child.wait_with_output().await.expect("mirror finishes");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("<stdin>:2:5"), "{stderr}");
    // A missing file says which.
    let out = Mirror::new(["sync", "/nonexistent/mirror.yaml"])
        .run()
        .await;
    out.expect_code(2);
    assert!(
        out.stderr.contains("/nonexistent/mirror.yaml"),
        "{}",
        out.describe()
    );
}

/// `tags: { semver, latest, exclude }` over Docker's tag shapes: one
/// listing (n=1000) for the repository however many entries select from
/// it, exactly the chosen tags land, a tag list needs no listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_selection_lands_exactly_the_chosen_tags_over_one_listing() {
    let small = small_image().await;
    let source = open_registry().await;
    let all = [
        "18.0.0",
        "20.11.1",
        "v21.7.3",
        "22.1.0",
        "22.2.0-rc1",
        "22.2.0",
        "23.0.0",
        "latest",
        "22",
    ];
    for tag in all {
        seed(&small, &source.host(), "node", tag).await;
    }
    let proxy = proxy_to(&source).await;
    let destination = open_registry().await;
    let scratch = Scratch::new("sync-selection");
    let file = fleet_file(
        &scratch,
        "mirror.yaml",
        &format!("{}/mirror", destination.host()),
        &proxy.host(),
        &[
            "node\n    tags: { semver: \">=20 <23\", latest: 3, exclude: ['.*-rc.*'] }",
            "node\n    tags: { regex: '1[0-9][.].*' }\n    prefix: old/",
            "node\n    tags: [latest]\n    prefix: pinned/",
        ],
    );
    let out = sync(&file, &[proxy.host(), destination.host()], ["--json"])
        .run()
        .await;
    out.expect_success();
    let dst = destination.host();
    let expected = [
        format!("{dst}/mirror/node:22"),
        format!("{dst}/mirror/node:22.1.0"),
        format!("{dst}/mirror/node:22.2.0"),
        format!("{dst}/mirror/old/node:18.0.0"),
        format!("{dst}/mirror/pinned/node:latest"),
    ];
    let landed: Vec<String> = states(&out.json()).into_iter().map(|(d, _)| d).collect();
    assert_eq!(landed, expected, "{}", out.describe());
    for tag in ["22.2.0", "22.1.0", "22"] {
        assert_landed(&dst, "mirror/node", tag, &small, &ANON).await;
    }
    for tag in ["v21.7.3", "20.11.1", "22.2.0-rc1", "23.0.0", "latest"] {
        assert_no_manifest(&dst, "mirror/node", tag, &ANON).await;
    }
    let listings: Vec<RequestRecord> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/tags/list") && r.status == 200)
        .collect();
    assert_eq!(listings.len(), 1, "{}", describe(&listings));
    assert_eq!(listings[0].query.as_deref(), Some("n=1000"));
}

/// One image whose blob comes back corrupt fails alone: the others land,
/// exit 1 after everything finished, and the summary names the failure and
/// its cause. A blob whose transfer failed for one tag is fetched again for
/// the next tag that needs it (two tags of one image, one destination
/// repository: the first keeps its failure, the second lands). With
/// --fail-fast nothing starts after the first failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_image_fails_alone_and_the_summary_names_its_cause() {
    let broken = image(ImageSpec::small("sync-isolation-broken", 72)).await;
    let shared = small_image().await;
    let other = image(ImageSpec::small("sync-isolation-other", 71)).await;
    let source = open_registry().await;
    seed(&broken, &source.host(), "broken", "1").await;
    seed(&shared, &source.host(), "app", "1").await;
    seed(&shared, &source.host(), "app", "2").await;
    seed(&other, &source.host(), "tool", "1").await;
    let proxy = proxy_to(&source).await;
    let largest =
        |image: &GeneratedImage| image.largest_blob().expect("blobs").digest().to_string();
    let (bad, flaky) = (largest(&broken), largest(&shared));
    // Every GET of this one is corrupt; the shared one only the first time.
    proxy.add_rule(
        Rule::new(Fault::FlipByte { offset: 100 })
            .method("GET")
            .path_contains(&format!("/broken/blobs/{bad}")),
    );
    proxy.add_rule(
        Rule::new(Fault::FlipByte { offset: 100 })
            .method("GET")
            .path_contains(&format!("/app/blobs/{flaky}"))
            .times(1),
    );
    let destination = open_registry().await;
    let scratch = Scratch::new("sync-isolation");
    let file = fleet_file(
        &scratch,
        "mirror.yaml",
        &destination.host(),
        &proxy.host(),
        &["broken:1", "app\n    tags: [\"1\", \"2\"]", "tool:1"],
    );
    let hosts = [proxy.host(), destination.host()];
    let out = sync(&file, &hosts, ["--json"]).run().await;
    out.expect_code(1);
    let dst = destination.host();
    assert_eq!(
        states(&out.json()),
        vec![
            (format!("{dst}/app:1"), "failed".to_owned()),
            (format!("{dst}/app:2"), "copied".to_owned()),
            (format!("{dst}/broken:1"), "failed".to_owned()),
            (format!("{dst}/tool:1"), "copied".to_owned()),
        ],
        "{}",
        out.describe()
    );
    assert_landed(&dst, "tool", "1", &other, &ANON).await;
    assert_no_manifest(&dst, "app", "1", &ANON).await;
    assert_landed(&dst, "app", "2", &shared, &ANON).await;
    assert_no_manifest(&dst, "broken", "1", &ANON).await;
    assert!(
        crate::support::blob_gets(&proxy.requests(), &flaky) >= 2,
        "the blob that failed once was fetched again\n{}",
        describe(&proxy.requests())
    );
    assert!(out.stderr.contains("failed:"), "{}", out.describe());
    assert!(
        out.stderr.contains(&bad) && out.stderr.contains("2 failed"),
        "the summary names the blob and counts the failure\n{}",
        out.describe()
    );

    // --fail-fast, one image at a time: the first fails, nothing else starts.
    let destination = open_registry().await;
    let file = fleet_file(
        &scratch,
        "fail-fast.yaml",
        &destination.host(),
        &proxy.host(),
        &["broken:1", "tool:1"],
    );
    let out = sync(
        &file,
        &[proxy.host(), destination.host()],
        ["--fail-fast", "--max-concurrent-images", "1", "--json"],
    )
    .run()
    .await;
    out.expect_code(1);
    let states = states(&out.json());
    assert_eq!(
        states.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["failed", "not-started"],
        "{}",
        out.describe()
    );
    assert_no_manifest(&destination.host(), "tool", "1", &ANON).await;
}

/// Docker Hub's quota: with --max-source-pulls the images that would pass
/// it are deferred (exit 3), none of them half-written, the summary says how
/// many pulls were spent, and the next run picks them up. The same holds
/// when the registry's own `ratelimit-remaining` is what runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_budget_defers_what_it_cannot_afford() {
    let aws = aws(EcrOptions::default()).await;
    let images = [
        image(ImageSpec::small("sync-budget-a", 81)).await,
        image(ImageSpec::small("sync-budget-b", 82)).await,
        image(ImageSpec::small("sync-budget-c", 83)).await,
    ];
    for (i, img) in images.iter().enumerate() {
        aws.hub
            .seed(img, &format!("library/app{i}"), "1")
            .await
            .expect("seed");
    }
    let scratch = Scratch::new("sync-budget");
    let file = sync_file(
        &scratch,
        "mirror.yaml",
        "images:\n  - from: app0:1\n  - from: app1:1\n  - from: app2:1\n",
    );
    // Each image is an index of two: three GETs. A budget of 4 pays for
    // the first; the second spends its root GET and stops; the third is
    // not tried.
    let out = aws
        .mirror([
            "sync",
            &file,
            "--max-source-pulls",
            "4",
            "--max-concurrent-images",
            "1",
            "--json",
        ])
        .run()
        .await;
    out.expect_code(3);
    let report = out.json();
    let states: Vec<String> = report["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| text(t, "/state").to_owned())
        .collect();
    assert_eq!(states, ["copied", "deferred", "deferred"], "{report:#}");
    assert_eq!(num(&report, "/pulls/0/spent"), 4, "{report:#}");
    assert_eq!(manifest_gets(&aws.hub.requests()), 4);
    assert!(
        out.stderr.contains("4 manifest GETs of at most 4"),
        "{}",
        out.describe()
    );
    aws.assert_landed("app0", "1", &images[0]).await;
    for repository in ["app1", "app2"] {
        assert_no_manifest(&aws.ecr.host(), repository, "1", &aws.ecr_auth()).await;
        assert!(
            aws.ecr_writes()
                .iter()
                .all(|r| !r.path.starts_with(&format!("/v2/{repository}/"))),
            "a deferred image wrote to ECR"
        );
    }

    // The registry's own remaining count: 3 pulls left pays for one image.
    aws.hub.set_remaining(3);
    let out = aws.mirror(["sync", &file, "--json"]).run().await;
    out.expect_code(3);
    let report = out.json();
    let copied: Vec<&Value> = report["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter(|t| t["state"] == "copied")
        .collect();
    assert_eq!(copied.len(), 1, "{report:#}");

    // Quota back: the next run picks up the rest.
    aws.hub.set_remaining(100);
    let out = aws.mirror(["sync", &file, "--json"]).run().await;
    out.expect_success();
    for (i, img) in images.iter().enumerate() {
        aws.assert_landed(&format!("app{i}"), "1", img).await;
    }
}

/// `--plan`: every tag as up to date / new / changed (old and new digest) /
/// missing, and for an immutable ECR tag conflict; HEADs only, nothing
/// written. `--plan --sizes` GETs manifests to show the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_says_what_each_tag_needs_and_writes_nothing() {
    let aws: Aws = aws(EcrOptions::default()).await;
    let small = small_image().await;
    let newer = image(ImageSpec::small("sync-plan-newer", 91)).await;
    for repository in [
        "library/same",
        "library/moved",
        "library/fresh",
        "library/pinned",
    ] {
        aws.hub.seed(&small, repository, "1").await.expect("seed");
    }
    aws.mirror(["same:1", "moved:1"])
        .run()
        .await
        .expect_success();
    aws.mirror(["pinned:1", "--tag-mutability", "IMMUTABLE"])
        .run()
        .await
        .expect_success();
    for repository in ["library/moved", "library/pinned"] {
        aws.hub
            .seed(&newer, repository, "1")
            .await
            .expect("move upstream");
    }
    let scratch = Scratch::new("sync-plan");
    let file = sync_file(
        &scratch,
        "mirror.yaml",
        "images:\n  - from: same\n    tags: [\"1\"]\n  - from: moved:1\n  - from: fresh:1\n  - from: pinned:1\n  - from: gone:1\n",
    );
    aws.ecr.clear_requests();
    aws.hub.clear_requests();
    let out = aws.mirror(["sync", &file, "--plan", "--json"]).run().await;
    out.expect_success();
    let plan = out.json();
    let host = aws.ecr.registry_host();
    let state = |repository: &str| -> Value {
        plan["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .find(|t| t["destination"] == format!("{host}/{repository}:1"))
            .cloned()
            .unwrap_or_else(|| panic!("{repository}: {plan:#}"))
    };
    assert_eq!(state("same")["state"], "up-to-date", "{plan:#}");
    assert_eq!(state("fresh")["state"], "new", "{plan:#}");
    assert_eq!(state("gone")["state"], "missing", "{plan:#}");
    let moved = state("moved");
    assert_eq!(moved["state"], "changed", "{plan:#}");
    assert_eq!(moved["old"], small.root_digest().to_string());
    assert_eq!(moved["digest"], newer.root_digest().to_string());
    let pinned = state("pinned");
    assert_eq!(pinned["state"], "conflict", "{plan:#}");
    assert_eq!(pinned["existing"], small.root_digest().to_string());
    assert!(aws.ecr_writes().is_empty(), "the plan wrote to ECR");
    assert_eq!(
        manifest_gets(&aws.hub.requests()),
        0,
        "the plan spent pulls"
    );
    assert!(
        aws.ecr.requests().iter().all(|r| !is_write(r)),
        "{}",
        describe(&aws.ecr.requests())
    );

    let sized = aws
        .mirror(["sync", &file, "--plan", "--sizes", "--json"])
        .run()
        .await;
    sized.expect_success();
    let plan = sized.json();
    let fresh = plan["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .find(|t| t["state"] == "new")
        .cloned()
        .expect("a new tag");
    assert!(num(&fresh, "/bytes") > 0, "{plan:#}");
    assert!(aws.ecr_writes().is_empty(), "--sizes wrote to ECR");

    // Run: the conflict is named and not attempted, the others land.
    let run = aws.mirror(["sync", &file]).run().await;
    run.expect_code(1);
    assert!(
        run.stderr.contains("immutable") && run.stderr.contains(&small.root_digest().to_string()),
        "{}",
        run.describe()
    );
    let pinned = fetch(&aws.ecr.host(), "pinned", "1", &aws.ecr_auth()).await;
    assert_eq!(pinned.digest, small.root_digest().to_string());
    aws.assert_landed("moved", "1", &newer).await;
    aws.assert_landed("fresh", "1", &small).await;
}

/// `target: oci-archive:FILE`: every selected image in one archive, each
/// under the ref name `NAME:TAG`, digests kept; the archive read back as a
/// source lands the same digests in a registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_target_holds_every_image_under_its_name_and_tag() {
    let small = small_image().await;
    let other = image(ImageSpec::small("sync-bundle-other", 61)).await;
    let source = open_registry().await;
    seed(&small, &source.host(), "library/python", "3.10").await;
    seed(&other, &source.host(), "team/app", "1.0").await;
    let scratch = Scratch::new("sync-bundle");
    let file = sync_file(
        &scratch,
        "mirror.yaml",
        &format!(
            "defaults:\n  target: oci-archive:bundle.tar\nimages:\n  - from: {src}/library/python:3.10\n  - from: {src}/team/app\n    tags: [\"1.0\"]\n    to: app\n",
            src = source.host()
        ),
    );
    let out = sync(&file, &[source.host()], []).run().await;
    out.expect_success();
    let bundle = scratch.path().join("bundle.tar");
    let listed = Mirror::inspect(&format!("oci-archive:{}", bundle.display()))
        .arg("--json")
        .run()
        .await;
    listed.expect_success();
    let mut names: Vec<(String, String)> = listed.json()["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| (text(i, "/name").to_owned(), text(i, "/digest").to_owned()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("app:1.0".to_owned(), other.root_digest().to_string()),
            // The source's path keeps its `library/` on another registry.
            (
                "library/python:3.10".to_owned(),
                small.root_digest().to_string()
            ),
        ],
        "{}",
        listed.describe()
    );
    let destination = open_registry().await;
    Mirror::copy(
        &format!("oci-archive:{}:app:1.0", bundle.display()),
        &format!("{}/app:1.0", destination.host()),
    )
    .run()
    .await
    .expect_success();
    assert_landed(&destination.host(), "app", "1.0", &other, &ANON).await;
}

/// Two small images (`LABEL-a` of `seed_of_a`, `LABEL-b` of the seed after
/// it) as `a:1` and `b:1` of a new registry.
async fn a_and_b(label: &str, seed_of_a: u64) -> (GeneratedImage, GeneratedImage, Registry) {
    let first = image(ImageSpec::small(&format!("{label}-a"), seed_of_a)).await;
    let second = image(ImageSpec::small(&format!("{label}-b"), seed_of_a + 1)).await;
    let source = open_registry().await;
    seed(&first, &source.host(), "a", "1").await;
    seed(&second, &source.host(), "b", "1").await;
    (first, second, source)
}

/// `--max-concurrent-images 1`: one image at a time, so the source sees
/// every request of one image before the next image's first GET (with the
/// default bound the two interleave).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_images_bounds_the_images_in_flight() {
    let (first, second, source) = a_and_b("sync-one-at-a-time", 51).await;
    let proxy = proxy_to(&source).await;
    let destination = open_registry().await;
    let scratch = Scratch::new("sync-one-at-a-time");
    let file = fleet_file(
        &scratch,
        "mirror.yaml",
        &destination.host(),
        &proxy.host(),
        &["a:1", "b:1"],
    );
    let out = sync(
        &file,
        &[proxy.host(), destination.host()],
        ["--max-concurrent-images", "1"],
    )
    .run()
    .await;
    out.expect_success();
    assert_landed(&destination.host(), "a", "1", &first, &ANON).await;
    assert_landed(&destination.host(), "b", "1", &second, &ANON).await;
    // The plan lists each source repository once, beside its HEADs (the
    // copies need the listing to find referrer tags).
    let listings = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/tags/list"))
        .count();
    assert_eq!(listings, 2, "{}", describe(&proxy.requests()));
    // After the plan: a's GETs, then b's, never interleaved.
    let gets: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && !r.path.contains("/tags/list"))
        .map(|r| r.path.split('/').nth(2).unwrap_or_default().to_owned())
        .collect();
    let switches = gets.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1, "{gets:?}\n{}", describe(&proxy.requests()));
    // The source has no referrers API: learned once for the registry, not
    // once per repository.
    let probes = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/referrers/"))
        .count();
    assert_eq!(probes, 1, "{}", describe(&proxy.requests()));
    assert_eq!(gets.first().map(String::as_str), Some("a"), "{gets:?}");
}

/// `--shard K/N`: three processes run at once on one file, each with its
/// shard; together they copy exactly the unsharded plan, every tag by one
/// of them and every manifest tag pushed once, and a repository's tags stay
/// in one shard. Shard 1 alone plans the log groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_run_at_once_and_together_copy_the_plan_once() {
    let small = small_image().await;
    let source = open_registry().await;
    let repositories: Vec<String> = (0..8).map(|i| format!("app{i}")).collect();
    for repository in &repositories {
        for tag in ["1", "2"] {
            seed(&small, &source.host(), repository, tag).await;
        }
    }
    let destination = open_registry().await;
    let proxy = proxy_to(&destination).await;
    let scratch = Scratch::new("sync-shards");
    let images: Vec<String> = repositories
        .iter()
        .map(|repository| format!("{repository}\n    tags: ['1', '2']"))
        .collect();
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    let yaml = fleet(&proxy.host(), &source.host(), &images);
    let file = sync_file(&scratch, "fleet.yaml", &yaml);
    let with_logs = sync_file(
        &scratch,
        "fleet-logs.yaml",
        &format!("{yaml}log-groups:\n  - {{ name: fleet, retention-days: 1 }}\n"),
    );
    let hosts = [source.host(), proxy.host()];

    let whole = sync(&file, &hosts, ["--plan", "--json"]).run().await;
    whole.expect_success();
    let mut planned: Vec<String> = whole.json()["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| text(t, "/destination").to_owned())
        .collect();
    planned.sort();
    assert_eq!(planned.len(), 16, "{}", whole.describe());
    for (shard, groups) in [("1/3", 1), ("2/3", 0), ("3/3", 0)] {
        let plan = sync(&with_logs, &hosts, ["--plan", "--json", "--shard", shard])
            .run()
            .await;
        plan.expect_success();
        let json = plan.json();
        assert_eq!(json["shard"], shard, "{}", plan.describe());
        assert_eq!(
            json["log_groups"].as_array().map(Vec::len),
            Some(groups),
            "shard {shard}: {}",
            plan.describe()
        );
    }
    proxy.clear_requests();

    let (one, two, three) = tokio::join!(
        sync(&file, &hosts, ["--json", "--shard", "1/3"]).run(),
        sync(&file, &hosts, ["--json", "--shard", "2/3"]).run(),
        sync(&file, &hosts, ["--json", "--shard", "3/3"]).run(),
    );
    let mut copied: Vec<String> = Vec::new();
    let mut nonempty = 0;
    for (shard, out) in [("1/3", &one), ("2/3", &two), ("3/3", &three)] {
        out.expect_success();
        let report = out.json();
        assert_eq!(report["shard"], shard, "{}", out.describe());
        let tags = states(&report);
        assert!(
            tags.iter().all(|(_, state)| state == "copied"),
            "shard {shard}: {tags:?}"
        );
        nonempty += usize::from(!tags.is_empty());
        copied.extend(tags.into_iter().map(|(d, _)| d));
    }
    copied.sort();
    assert_eq!(
        copied, planned,
        "the shards together are the plan, each tag once"
    );
    assert!(nonempty >= 2, "the partition put everything in one shard");

    // Every tag pushed once, by one process; a repository's tags by one.
    let puts: Vec<RequestRecord> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/") && r.status < 300)
        .collect();
    for repository in &repositories {
        for tag in ["1", "2"] {
            let path = format!("/v2/{repository}/manifests/{tag}");
            assert_eq!(
                puts.iter().filter(|r| r.path == path).count(),
                1,
                "{path}: {}",
                describe(&puts)
            );
            assert_landed(&destination.host(), repository, tag, &small, &ANON).await;
        }
    }
}

/// `--shards N` takes K from `JOB_COMPLETION_INDEX` (0-based, as a
/// Kubernetes Indexed Job sets it); without it, or out of range, the run
/// stops before anything is asked of a registry: exit 2, naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_from_the_completion_index() {
    let scratch = Scratch::new("sync-shards-index");
    // 127.0.0.1:9 answers nothing: a run that got past the flags would fail.
    let file = sync_file(
        &scratch,
        "fleet.yaml",
        "defaults:\n  target: 127.0.0.1:9\nimages:\n  - from: 127.0.0.1:9/app:1\n",
    );
    for index in [None, Some("3"), Some("x")] {
        let mut run = Mirror::new(["sync", &file, "--shards", "3", "--plan"]);
        run = match index {
            Some(value) => run.env("JOB_COMPLETION_INDEX", value),
            None => run.without_env("JOB_COMPLETION_INDEX"),
        };
        let out = run.run().await;
        out.expect_code(2);
        assert!(
            out.stderr.contains("JOB_COMPLETION_INDEX") && out.stderr.contains("--shard K/N"),
            "{}",
            out.describe()
        );
    }
    let out = Mirror::new(["sync", &file, "--shard", "4/3", "--plan"])
        .run()
        .await;
    out.expect_code(2);
    assert!(out.stderr.contains("4/3"), "{}", out.describe());

    // Past the flags, the plan of a tag whose HEAD failed says so and exits 1.
    let out = sync(
        &file,
        &["127.0.0.1:9".to_owned()],
        ["--plan", "--shard", "1/1"],
    )
    .run()
    .await;
    out.expect_code(1);
    assert!(
        out.stdout.starts_with("failed") && out.stderr.contains("could not be planned"),
        "{}",
        out.describe()
    );
}

/// The value of one sample in a Prometheus text file.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// That one sample of a Prometheus text file has this value (`None`: no
/// such sample).
#[track_caller]
fn assert_sample(text: &str, series: &str, expected: Option<f64>) {
    assert_eq!(sample(text, series), expected, "{series} in\n{text}");
}

/// Runs `run`, which must exit `code`, and reads the metrics file it wrote.
async fn metrics_of(run: Mirror, code: i32, metrics: &Path) -> String {
    run.run().await.expect_code(code);
    std::fs::read_to_string(metrics).expect("the metrics file")
}

/// `--metrics-file`: the run's numbers in the Prometheus text format, written
/// atomically at the end: tags by outcome, blobs, answers by host and class,
/// pulls; a failed run keeps the last success time of the run before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_file_says_what_the_run_did() {
    let (first, second, source) = a_and_b("sync-metrics", 61).await;
    let destination = open_registry().await;
    let scratch = Scratch::new("sync-metrics");
    let file = fleet_file(
        &scratch,
        "mirror.yaml",
        &destination.host(),
        &source.host(),
        &["a:1", "b:1"],
    );
    let metrics = scratch.path().join("mirror.prom");
    let metrics_arg = metrics.display().to_string();
    let hosts = [source.host(), destination.host()];

    let text = metrics_of(
        sync(&file, &hosts, ["--metrics-file", &metrics_arg]),
        0,
        &metrics,
    )
    .await;
    assert_sample(&text, r#"mirror_sync_tags{state="copied"}"#, Some(2.0));
    let blobs = (first.blobs.len() + second.blobs.len()) as f64;
    assert_sample(&text, r#"mirror_sync_blobs{outcome="copied"}"#, Some(blobs));
    let bytes = (first.total_blob_bytes() + second.total_blob_bytes()) as f64;
    assert_sample(
        &text,
        r#"mirror_sync_blob_bytes{outcome="copied"}"#,
        Some(bytes),
    );
    let ok = format!(
        r#"mirror_sync_requests{{host="{}",class="2xx"}}"#,
        destination.host()
    );
    assert!(sample(&text, &ok).is_some_and(|n| n > 0.0), "{text}");
    let succeeded =
        sample(&text, "mirror_sync_last_success_timestamp_seconds").expect("a success time");

    // Warm: both up to date.
    let text = metrics_of(
        sync(&file, &hosts, ["--metrics-file", &metrics_arg]),
        0,
        &metrics,
    )
    .await;
    assert_sample(&text, r#"mirror_sync_tags{state="up-to-date"}"#, Some(2.0));
    assert_sample(&text, r#"mirror_sync_tags{state="copied"}"#, None);
    let warm = sample(&text, "mirror_sync_last_success_timestamp_seconds").expect("a success time");
    assert!(warm >= succeeded, "{text}");

    // A failing tag: the run's own counts, the last success carried over.
    let failing = fleet_file(
        &scratch,
        "failing.yaml",
        &destination.host(),
        &source.host(),
        &["a:1", "missing:1"],
    );
    let run = sync(&failing, &hosts, ["--metrics-file", &metrics_arg]);
    let text = metrics_of(run, 1, &metrics).await;
    assert_sample(&text, r#"mirror_sync_tags{state="failed"}"#, Some(1.0));
    assert_sample(
        &text,
        "mirror_sync_last_success_timestamp_seconds",
        Some(warm),
    );
    let last_run = sample(&text, "mirror_sync_last_run_timestamp_seconds").expect("a run time");
    assert!(last_run >= warm, "{text}");
}
