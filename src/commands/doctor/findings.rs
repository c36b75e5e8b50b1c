//! What doctor reports: a finding (what is wrong, why it matters, the fix) and how it prints.

use std::fmt;

use crate::log::printable;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub account: Option<String>,
    pub what: String,
    pub why: String,
    pub fix: String,
    /// About the config file or the command line: doctor then exits 2, as any command would.
    pub usage: bool,
}

impl Finding {
    pub fn new(severity: Severity, account: Option<&str>, what: impl Into<String>) -> Finding {
        Finding {
            severity,
            account: account.map(str::to_string),
            what: what.into(),
            why: String::new(),
            fix: String::new(),
            usage: false,
        }
    }

    pub fn usage(mut self) -> Finding {
        self.usage = true;
        self
    }

    pub fn why(mut self, why: impl Into<String>) -> Finding {
        self.why = why.into();
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = fix.into();
        self
    }

    /// The finding as one line of an error: what, why, and the fix.
    pub fn one_line(&self) -> String {
        let mut line = printable(&self.what).into_owned();
        for part in [&self.why, &self.fix] {
            if !part.is_empty() {
                line.push_str(": ");
                line.push_str(&printable(part));
            }
        }
        line
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        // Findings may quote a server (its Date header, its error): shown, not obeyed.
        let what = printable(&self.what);
        match &self.account {
            Some(a) => writeln!(f, "{level} [{a}]: {what}")?,
            None => writeln!(f, "{level}: {what}")?,
        }
        if !self.why.is_empty() {
            writeln!(f, "  why: {}", printable(&self.why))?;
        }
        if !self.fix.is_empty() {
            writeln!(f, "  fix: {}", printable(&self.fix))?;
        }
        Ok(())
    }
}
