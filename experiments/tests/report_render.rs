//! Reports rendered from fixed raw data (a real `quick` run's, in `fixtures/quick-run`): the
//! tables against golden files, the SVG plots checked for structure, the `.hgrm` files read back
//! against the histograms they came from, and `lab compare`.
//!
//! After an intended change of the tables, `UPDATE_GOLDEN=1 cargo test -p experiments --test
//! report_render` rewrites the golden files; review their diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use experiments::report::{RunData, hgrm, render, tables};
use lab_core::report::{Report, decode};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quick-run")
}

/// A copy of the fixture in a temporary folder, rendered.
fn rendered() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy(&fixture(), tmp.path());
    render(tmp.path()).unwrap();
    tmp
}

fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn the_tables_match_their_golden_files() {
    let data = RunData::load(&fixture()).unwrap();
    golden("comparison.md", &tables::comparison_table(&data).markdown());
    golden("figures.md", &tables::figures_table(&data).markdown());
    golden("figures.csv", &tables::csv(&data));
}

#[test]
fn the_report_has_both_systems_the_table_and_every_plot() {
    let tmp = rendered();
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    for needle in [
        "## The two systems compared",
        "| Transport |",
        "| State |",
        "| Latency profile |",
        "| Fault tolerance |",
        "| Scaling |",
        "| Complexity |",
        "| Best use |",
        "System 1",
        "System 2",
        "belong to this machine",
        "latency.svg",
        "throughput.svg",
        "spectrum-01-200-s.svg",
        "coalesced",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}");
    }
    assert!(!md.contains("PARTIAL"), "a complete run is not partial");
    let html = std::fs::read_to_string(tmp.path().join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(!html.contains("<script"), "the report needs no script");
    assert!(!html.contains("src=\""), "the report is self-contained");
    assert_eq!(
        html.matches("<svg ").count(),
        4,
        "two plots and two spectra inline"
    );
}

#[test]
fn every_plot_is_an_svg_with_a_line_per_series() {
    let tmp = rendered();
    for (name, series) in [
        ("latency.svg", 4),
        ("throughput.svg", 3),
        ("spectrum-01-200-s.svg", 4),
        ("spectrum-02-1000-s.svg", 4),
    ] {
        let svg = std::fs::read_to_string(tmp.path().join(name)).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{name}"
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        assert_eq!(svg.matches("<polyline").count(), series, "{name}");
        assert_eq!(svg.matches("<svg").count(), 1, "{name}");
        assert_eq!(svg.matches("<title>").count(), series + 1, "{name}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{name}");
        // Every point inside the drawing.
        for points in svg.split("points=\"").skip(1) {
            let points = points.split('"').next().unwrap();
            assert!(!points.is_empty(), "{name}: an empty line");
            for p in points.split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(
                    (0.0..=720.0).contains(&x) && (0.0..=400.0).contains(&y),
                    "{name}: {p}"
                );
            }
        }
    }
    let spectrum = std::fs::read_to_string(tmp.path().join("spectrum-02-1000-s.svg")).unwrap();
    for tick in ["90%", "99%", "99.9%", "99.99%"] {
        assert!(spectrum.contains(&format!(">{tick}</text>")), "{tick}");
    }
    for series in ["System 1 e2e", "System 2 e2e", "System 1 ack", "System 2 ack"] {
        assert!(spectrum.contains(series), "{series}");
    }
}

#[test]
fn hgrm_files_read_back_as_the_histograms_they_came_from() {
    let tmp = rendered();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("steps/02-1000-s.json")).unwrap())
            .unwrap();
    for system in ["system1", "system2"] {
        let report: Report = serde_json::from_value(json[system].clone()).unwrap();
        let h = decode(&report.histograms.e2e, "e2e").unwrap();
        let text =
            std::fs::read_to_string(tmp.path().join(format!("steps/02-1000-s-{system}-e2e.hgrm"))).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        let lines = hgrm::read(&text).unwrap();
        assert!(lines.len() > 10);
        let last = lines.last().unwrap();
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.total_count, h.len());
        assert!((last.value - h.max() as f64 / 1000.0).abs() < 0.01 * last.value.max(1.0));
        assert!(lines.windows(2).all(|w| w[0].quantile <= w[1].quantile
            && w[0].value <= w[1].value
            && w[0].total_count <= w[1].total_count));
        // The median line agrees with the histogram (to its precision).
        let median = lines.iter().find(|l| l.quantile >= 0.5).unwrap();
        let want = h.highest_equivalent(h.value_at_quantile(0.5)) as f64 / 1000.0;
        assert!(
            (median.value - want).abs() <= 0.001 + want * 0.001,
            "{} vs {want}",
            median.value
        );
        assert!(text.contains(&format!("Total count    = {:>12}]", h.len())));
    }
}

#[test]
fn lab_report_re_renders_a_folder_and_names_a_wrong_one() {
    let tmp = tempfile::tempdir().unwrap();
    copy(&fixture(), tmp.path());
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("report")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tmp.path().join("report.html").is_file());
    assert!(tmp.path().join("steps/01-200-s-system1-ack.hgrm").is_file());
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("report")
        .arg(tmp.path().join("steps"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("run.json"), "{err}");
}

#[test]
fn compare_shows_no_change_against_itself_and_refuses_another_scenario() {
    let a = tempfile::tempdir().unwrap();
    copy(&fixture(), a.path());
    let b = tempfile::tempdir().unwrap();
    copy(&fixture(), b.path());
    let lab = |args: &[&Path]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lab"));
        c.arg("compare").args(args);
        c.output().unwrap()
    };
    let out = lab(&[a.path(), b.path()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("| 1000/s | System 1 | e2e p99 ms |"), "{text}");
    assert!(text.contains("+0 %") && !text.contains("beyond noise"), "{text}");
    assert!(text.contains("assumed"), "{text}");

    // B: another scenario, and a slower System 1.
    let run = b.path().join("run.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&run).unwrap()).unwrap();
    record["scenario"]["name"] = "other".into();
    std::fs::write(&run, record.to_string()).unwrap();
    let step = b.path().join("steps/02-1000-s.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&step).unwrap()).unwrap();
    let p99 = json["system1"]["e2e_latency_ms"]["p99"].as_f64().unwrap();
    json["system1"]["e2e_latency_ms"]["p99"] = (p99 * 5.0).into();
    std::fs::write(&step, json.to_string()).unwrap();
    let out = lab(&[a.path(), b.path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--force"), "{err}");
    let out = lab(&[a.path(), b.path(), Path::new("--force")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let line = text
        .lines()
        .find(|l| l.starts_with("| 1000/s | System 1 | e2e p99 ms |"))
        .unwrap();
    assert!(line.contains("+400 %") && line.contains("beyond noise"), "{line}");
}
