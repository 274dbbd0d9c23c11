//! Issue 16's token and recall figures (docs/BENCHMARKS.md), printed as Markdown tables.
//!
//! ```sh
//! cargo bench -p mcpd-tests --bench tokens            # both
//! cargo bench -p mcpd-tests --bench tokens -- recall  # only the recall table
//! ```
//!
//! - `tokens`: the tool definitions a client receives with 50, 100, 500 and 1000 tools, full
//!   (`toolMode: all`) versus search mode, counted with real BPE tokenizers that work offline
//!   (`tiktoken-rs`, which embeds OpenAI's `o200k_base` and `cl100k_base`). The tools are the
//!   real definitions captured from popular servers (`tests/benches/catalogs/`), repeated under
//!   other server names to reach the count. Search mode also shows what one lookup costs
//!   (a `search_tools` answer with 8 hits and a `describe_tools` of one tool), since a client
//!   pays that per tool it looks for instead of the whole list in every request.
//! - `recall`: `search_tools` (mcpd's own BM25, `daemon/src/router/search.rs`) over all the
//!   captured tools together, with one natural-language task per tool
//!   (`tests/benches/catalogs/tasks.json`): recall@1 and @5 of the tool the task was written
//!   for.
//!
//! The answers are produced by the daemon's own code (`mcpd::router::search`), in process;
//! nothing is timed, so the figures are exact and repeatable.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::cast_precision_loss
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use mcpd::router::catalog::Entry;
use mcpd::router::search::{self, Handled, Index};
use mcpd_proto::envelope::Envelope;
use serde_json::{Value, json};
use tiktoken_rs::CoreBPE;

struct Catalog {
    server: String,
    package: String,
    tools: Vec<Value>,
}

fn catalogs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join("catalogs")
}

fn load_catalogs() -> Vec<Catalog> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(catalogs_dir())
        .expect("tests/benches/catalogs")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| p.file_stem().is_some_and(|s| s != "tasks"))
        .collect();
    paths.sort();
    for path in paths {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        out.push(Catalog {
            server: v["server"].as_str().unwrap().to_owned(),
            package: v["package"].as_str().unwrap().to_owned(),
            tools: v["tools"].as_array().unwrap().clone(),
        });
    }
    out
}

/// An entry as the catalog holds it: namespaced name, the object with only `name` rewritten.
fn entry(server: &str, tool: &Value) -> Entry {
    let original = tool["name"].as_str().unwrap().to_owned();
    let name = format!("{server}__{original}");
    let mut renamed = tool.clone();
    renamed["name"] = json!(name);
    Entry {
        name,
        server: server.to_owned(),
        original,
        json: renamed.to_string(),
    }
}

/// `n` tools: the captured ones in order, then again under other server names.
fn tools(catalogs: &[Catalog], n: usize) -> Vec<Entry> {
    let all: Vec<(&str, &Value)> = catalogs
        .iter()
        .flat_map(|c| c.tools.iter().map(move |t| (c.server.as_str(), t)))
        .collect();
    (0..n)
        .map(|i| {
            let (server, tool) = all[i % all.len()];
            let round = i / all.len();
            let server = if round == 0 {
                server.to_owned()
            } else {
                format!("{server}{}", round + 1)
            };
            entry(&server, tool)
        })
        .collect()
}

fn list_result(items: &[String]) -> String {
    format!("{{\"tools\":[{}]}}", items.join(","))
}

fn call(name: &str, arguments: &Value, tools: &[&Entry]) -> String {
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": name, "arguments": arguments}})
    .to_string();
    let msg = Envelope::parse(&line).unwrap();
    match search::handle(name, &msg, tools) {
        Handled::Answer(answer) => answer,
        Handled::Forward(_) => unreachable!("only search and describe are answered locally"),
    }
}

fn count(bpe: &CoreBPE, text: &str) -> usize {
    bpe.encode_ordinary(text).len()
}

fn bench_tokens(catalogs: &[Catalog]) {
    let o200k = tiktoken_rs::o200k_base().unwrap();
    let cl100k = tiktoken_rs::cl100k_base().unwrap();
    let trio = list_result(&search::trio());
    println!(
        "Tokens of what the client receives; `o200k_base` (GPT-4o family), `cl100k_base` in brackets.\n"
    );
    println!(
        "| tools | full `tools/list` result | search mode `tools/list` | one lookup in search mode (search 8 + describe 1) | full ÷ search list |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for n in [50, 100, 500, 1000] {
        let entries = tools(catalogs, n);
        let full = list_result(&entries.iter().map(|e| e.json.clone()).collect::<Vec<_>>());
        let refs: Vec<&Entry> = entries.iter().collect();
        let searched = call(
            search::SEARCH_TOOLS,
            &json!({"query": "create an issue in a github repository", "limit": 8}),
            &refs,
        );
        let described = call(
            search::DESCRIBE_TOOLS,
            &json!({"names": [entries[0].name]}),
            &refs,
        );
        let lookup_o = count(&o200k, &searched) + count(&o200k, &described);
        let lookup_c = count(&cl100k, &searched) + count(&cl100k, &described);
        println!(
            "| {n} | {} ({}) | {} ({}) | {lookup_o} ({lookup_c}) | {:.0}× |",
            count(&o200k, &full),
            count(&cl100k, &full),
            count(&o200k, &trio),
            count(&cl100k, &trio),
            count(&o200k, &full) as f64 / count(&o200k, &trio) as f64,
        );
    }
    let all: usize = catalogs.iter().map(|c| c.tools.len()).sum();
    let per_tool = {
        let entries = tools(catalogs, all);
        let full = list_result(&entries.iter().map(|e| e.json.clone()).collect::<Vec<_>>());
        count(&o200k, &full) as f64 / all as f64
    };
    println!(
        "\nThe {all} captured tools average {per_tool:.0} tokens each (o200k_base) in a `tools/list` result."
    );
}

fn bench_recall(catalogs: &[Catalog]) {
    let tasks: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(catalogs_dir().join("tasks.json")).expect("tasks.json"),
    )
    .unwrap();
    let entries: Vec<Entry> = catalogs
        .iter()
        .flat_map(|c| c.tools.iter().map(|t| entry(&c.server, t)))
        .collect();
    let index = Index::new(entries.iter());
    let mut rows = Vec::new();
    let (mut total, mut at1, mut at5) = (0, 0, 0);
    let mut misses = Vec::new();
    for c in catalogs {
        let (mut n, mut one, mut five) = (0, 0, 0);
        for tool in &c.tools {
            let name = format!("{}__{}", c.server, tool["name"].as_str().unwrap());
            let Some(task) = tasks.get(&name) else {
                eprintln!("no task for {name}");
                continue;
            };
            let hits = index.search(task, 5);
            let rank = hits.iter().position(|h| h.name == name);
            n += 1;
            one += usize::from(rank == Some(0));
            five += usize::from(rank.is_some());
            if rank.is_none() {
                misses.push(format!(
                    "{name}: \"{task}\" → {}",
                    hits.first().map_or("nothing", |h| h.name.as_str())
                ));
            }
        }
        rows.push((
            c.server.clone(),
            c.package.clone(),
            c.tools.len(),
            n,
            one,
            five,
        ));
        total += n;
        at1 += one;
        at5 += five;
    }
    println!(
        "{total} tasks over {} tools of {} servers, all in one index.\n",
        entries.len(),
        catalogs.len()
    );
    println!("| server | package | tools | recall@1 | recall@5 |");
    println!("|---|---|---:|---:|---:|");
    for (server, package, tools, n, one, five) in rows {
        println!(
            "| {server} | `{package}` | {tools} | {:.0}% | {:.0}% |",
            100.0 * one as f64 / n.max(1) as f64,
            100.0 * five as f64 / n.max(1) as f64
        );
    }
    println!(
        "| **all** | | {} | **{:.1}%** | **{:.1}%** |",
        entries.len(),
        100.0 * at1 as f64 / total.max(1) as f64,
        100.0 * at5 as f64 / total.max(1) as f64
    );
    if !misses.is_empty() {
        println!("\nNot in the top 5 (task → first hit):\n");
        for m in misses {
            println!("- {m}");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let catalogs = load_catalogs();
    if wanted("tokens") {
        println!("## `tokens`: tool definitions a client receives, full vs search mode\n");
        bench_tokens(&catalogs);
    }
    if wanted("recall") {
        println!("\n## `recall`: search_tools on real servers' catalogs\n");
        bench_recall(&catalogs);
    }
}
