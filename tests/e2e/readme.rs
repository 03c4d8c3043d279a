//! The README's walk through the demo, run as a reader runs it: each command line of its `sh`
//! blocks in turn, with a reader's pause before each, against a host serving the six example
//! plugins with the default settings, and every answer it shows (`# →` and the `#   ` lines
//! after it) checked against what the line printed. `localhost:7878` becomes the test host's
//! address and `host` the host binary built for the tests, on the test host's database.

use crate::harness::{
    DEMO, FRAUD_CHECK, Host, NOTIFIER, TALLY, host_binary, host_dir, workspace_root,
};
use std::process::Command;
use std::time::Duration;

/// How long a reader takes to read and type the next line.
const READER_PAUSE: Duration = Duration::from_secs(3);

/// The part of the README that is walked through.
const SECTION: &str = "## A walk through the demo";
const SECTION_END: &str = "## Operating it";

#[test]
fn the_readme_walk_through_prints_what_it_shows_when_followed_a_line_at_a_time() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let steps = walk_through(&readme);
    assert!(
        steps.len() >= 15,
        "the walk-through has its steps: {steps:#?}"
    );
    assert!(
        steps.iter().filter(|s| !s.shows.is_empty()).count() >= 15,
        "most steps show what they print: {steps:#?}"
    );

    let mut plugins = DEMO.to_vec();
    plugins.extend([FRAUD_CHECK, NOTIFIER, TALLY]);
    let host = Host::start_in(host_dir(&plugins), &[], &[]);
    let address = host.base_url().trim_start_matches("http://").to_owned();
    for step in &steps {
        std::thread::sleep(READER_PAUSE);
        let line = step.command.replace("localhost:7878", &address);
        // `host` is the command the README installs: here, the binary built for the tests.
        let line = match line.strip_prefix("host ") {
            Some(rest) => format!("{} {rest}", host_binary()),
            None => line,
        };
        let output = Command::new("sh")
            .args(["-c", &line])
            .current_dir(host.plugins_dir().parent().unwrap())
            .env("HOST_DATABASE_URL", host.database_url())
            .env("HOST_LOG", "warn")
            .output()
            .expect("running sh");
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "`{}` failed ({}):\n{printed}{}",
            step.command,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        if let Err(missing) = shows(&printed, &step.shows) {
            panic!(
                "`{}` printed\n{printed}\nwhich does not show, in order, the README's\n{}\n(first missing: {missing})",
                step.command,
                step.shows.join("\n")
            );
        }
    }
}

/// One command line of the walk-through and the lines the README shows it printing.
#[derive(Debug)]
struct Step {
    command: String,
    shows: Vec<String>,
}

/// The steps of the README's walk-through: the command lines of its `sh` blocks (joined where
/// they end in `\`), each with the `# → ` line after it and the `#   ` lines that continue it.
fn walk_through(readme: &str) -> Vec<Step> {
    let start = readme
        .find(SECTION)
        .expect("the README has its walk-through");
    let end = readme[start..]
        .find(SECTION_END)
        .map_or(readme.len(), |at| start + at);
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    let mut showing = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            showing = false;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(shown) = line.strip_prefix("# → ") {
            let step = steps.last_mut().expect("an answer follows a command");
            step.shows.push(shown.to_owned());
            showing = true;
        } else if let Some(more) = line.strip_prefix("#   ").filter(|_| showing) {
            steps.last_mut().unwrap().shows.push(more.to_owned());
        } else if line.starts_with('#') || line.trim().is_empty() {
            showing = false;
        } else {
            showing = false;
            let (part, continues) = match line.strip_suffix('\\') {
                Some(part) => (part, true),
                None => (line, false),
            };
            pending.push_str(part.trim_start());
            if continues {
                pending.push(' ');
            } else {
                steps.push(Step {
                    command: std::mem::take(&mut pending),
                    shows: Vec::new(),
                });
            }
        }
    }
    steps
}

/// Whether `printed` has a line matching each of `shown`, in that order: `…` stands for any
/// text, and runs of spaces count as one.
fn shows(printed: &str, shown: &[String]) -> Result<(), String> {
    let mut lines = printed.lines().map(squeeze);
    for expected in shown {
        let expected = squeeze(expected);
        if !lines.any(|line| matches(&line, &expected)) {
            return Err(expected);
        }
    }
    Ok(())
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `line` is `pattern`, where each `…` in the pattern stands for any text.
fn matches(line: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').map(str::trim).collect();
    let mut rest = line;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        match rest.find(part) {
            Some(at) if i > 0 || at == 0 => rest = &rest[at + part.len()..],
            _ => return false,
        }
    }
    parts.last().is_some_and(|last| last.is_empty()) || rest.is_empty()
}

#[test]
fn a_shown_line_matches_with_wildcards_and_squeezed_spaces() {
    assert!(matches(
        "replayed 2 dead-lettered deliveries: [1, 3]",
        "replayed 2 dead-lettered deliveries: […]"
    ));
    assert!(matches(
        "│ 1 dead fraud-check x │",
        "│ … dead fraud-check x │"
    ));
    assert!(!matches(
        "replayed 3 dead-lettered deliveries: [1]",
        "replayed 2 dead-lettered deliveries: […]"
    ));
    assert!(
        !matches("{\"a\":1} and more", "{\"a\":1}"),
        "a line without … matches whole"
    );
    assert!(shows("a\nb  c\nd", &["a".into(), "b c".into()]).is_ok());
    assert!(
        shows("b c\na", &["a".into(), "b c".into()]).is_err(),
        "in order"
    );
}
