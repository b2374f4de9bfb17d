//! How commands print: a table for people, JSON (`-o json`) for programs.

use comfy_table::{presets::NOTHING, Table};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Prints `rows` as JSON, or as a table of `headers` and `cells(row)`.
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Table => {
            let mut table = Table::new();
            table.load_preset(NOTHING).set_header(headers.to_vec());
            for row in rows {
                table.add_row(row);
            }
            println!("{table}");
        }
    }
    Ok(())
}

/// `24.0 GiB`, `512.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3s ago`, `5m ago`, `2h ago`.
pub fn ago(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "just now".into(),
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
        assert_eq!(super::ago(5), "5s ago");
        assert_eq!(super::ago(600), "10m ago");
    }
}
