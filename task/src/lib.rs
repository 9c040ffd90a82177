//! The one subprocess wrapper of the workspace.
//!
//! Every external program (mmdebstrap, mkfs tools, qemu-img, etcd, openssl, ...)
//! runs through [`Task`]: it carries a human description, logs the command line
//! at debug level, closes stdin unless input is given, and on failure returns an
//! error holding the description, the exit status and the tail of stderr. A
//! program that is not installed is reported with the Debian package that
//! provides it.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// How many bytes of stderr an error keeps.
const STDERR_TAIL: usize = 2048;

/// Why a task failed. Callers match on it (e.g. to tell "not installed" apart).
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{description}: `{program}` is not installed{}", package_hint(.package))]
    NotInstalled {
        description: String,
        program: String,
        package: Option<String>,
    },
    #[error("{description}: running `{program}`: {source}")]
    Spawn {
        description: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{description}: `{program}` failed ({status}){}", stderr_tail(.stderr))]
    Failed {
        description: String,
        program: String,
        status: ExitStatus,
        stderr: String,
    },
}

fn package_hint(package: &Option<String>) -> String {
    package
        .as_ref()
        .map(|p| format!(" (install the Debian package `{p}`)"))
        .unwrap_or_default()
}

fn stderr_tail(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        return String::new();
    }
    let mut start = stderr.len().saturating_sub(STDERR_TAIL);
    while !stderr.is_char_boundary(start) {
        start += 1;
    }
    format!(": {}", stderr[start..].replace('\n', " | "))
}

/// A command to run, with a description for logs and errors.
#[derive(Debug)]
pub struct Task {
    description: String,
    program: OsString,
    package: Option<String>,
    command: Command,
    stdin: Option<Vec<u8>>,
}

impl Task {
    /// `description` says what the command is for ("formatting the ESP").
    pub fn new(description: impl Into<String>, program: impl AsRef<OsStr>) -> Task {
        let program = program.as_ref().to_owned();
        Task {
            description: description.into(),
            command: Command::new(&program),
            program,
            package: None,
            stdin: None,
        }
    }

    /// The Debian package that provides the program (named if it is missing).
    pub fn package(mut self, package: &str) -> Task {
        self.package = Some(package.to_owned());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Task {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Task
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Task {
        self.command.env(key, value);
        self
    }

    pub fn env_clear(mut self) -> Task {
        self.command.env_clear();
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Task {
        self.command.current_dir(dir);
        self
    }

    /// Bytes written to the program's stdin (otherwise stdin is closed).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Task {
        self.stdin = Some(input.into());
        self
    }

    /// Runs to completion; stdout is discarded.
    pub fn run(self) -> Result<(), TaskError> {
        self.output().map(drop)
    }

    /// Runs to completion and returns stdout.
    pub fn read(self) -> Result<Vec<u8>, TaskError> {
        self.output()
    }

    /// Runs to completion and returns stdout as (lossy) UTF-8.
    pub fn read_string(self) -> Result<String, TaskError> {
        self.output()
            .map(|out| String::from_utf8_lossy(&out).into_owned())
    }

    /// Runs to completion, handing each line of stderr (lossy UTF-8) to
    /// `on_line` as it arrives: progress of a long compile. stdout is
    /// discarded; a failure still carries the tail of stderr.
    pub fn run_watching_stderr(self, mut on_line: impl FnMut(&str)) -> Result<(), TaskError> {
        self.output_watching(Some(&mut on_line)).map(drop)
    }

    /// Starts a long-running program (a server) with stdin closed and stdout and
    /// stderr appended to `log`. The caller owns (and must reap) the child.
    pub fn spawn_logged(mut self, log: &Path) -> Result<Child, TaskError> {
        tracing::debug!("{}: spawning {:?}", self.description, self.command);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| self.spawn_error(source))?;
        let file2 = file
            .try_clone()
            .map_err(|source| self.spawn_error(source))?;
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(file2));
        self.command
            .spawn()
            .map_err(|source| self.spawn_error(source))
    }

    fn output(self) -> Result<Vec<u8>, TaskError> {
        self.output_watching(None)
    }

    fn output_watching(
        mut self,
        on_line: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Vec<u8>, TaskError> {
        tracing::debug!("{}: running {:?}", self.description, self.command);
        self.command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .command
            .spawn()
            .map_err(|source| self.spawn_error(source))?;
        let input = self.stdin.take();
        let writer = child.stdin.take().map(|mut pipe| {
            std::thread::spawn(move || {
                // A program that exits without reading its input closes the pipe;
                // its exit status reports the problem.
                let _ = pipe.write_all(&input.unwrap_or_default());
            })
        });
        let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
        let stdout_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stdout_pipe.read_to_end(&mut buf).map(|_| buf)
        });
        let mut stderr = Vec::new();
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        match on_line {
            None => {
                let _ = stderr_pipe.read_to_end(&mut stderr);
            }
            Some(on_line) => {
                let mut lines = std::io::BufReader::new(stderr_pipe);
                let mut line = Vec::new();
                while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    on_line(String::from_utf8_lossy(&line).trim_end());
                    stderr.append(&mut line);
                }
            }
        }
        let stdout = stdout_reader
            .join()
            .unwrap_or_else(|_| Ok(Vec::new()))
            .map_err(|source| self.spawn_error(source))?;
        let status = child.wait().map_err(|source| self.spawn_error(source))?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        if !status.success() {
            return Err(TaskError::Failed {
                description: self.description,
                program: self.program.to_string_lossy().into_owned(),
                status,
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            });
        }
        Ok(stdout)
    }

    fn spawn_error(&self, source: std::io::Error) -> TaskError {
        let program = self.program.to_string_lossy().into_owned();
        if source.kind() == std::io::ErrorKind::NotFound {
            TaskError::NotInstalled {
                description: self.description.clone(),
                program,
                package: self.package.clone(),
            }
        } else {
            TaskError::Spawn {
                description: self.description.clone(),
                program,
                source,
            }
        }
    }
}

/// Finds `program` on `PATH` (and in the sbin directories, which a non-root
/// PATH may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stdout_and_feeds_stdin() {
        let out = Task::new("echoing", "cat")
            .stdin("hello")
            .read_string()
            .unwrap();
        assert_eq!(out, "hello");
    }

    #[test]
    fn failure_carries_stderr_tail() {
        let err = Task::new("failing on purpose", "sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .run()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("failing on purpose"), "{text}");
        assert!(text.contains("boom"), "{text}");
        assert!(matches!(err, TaskError::Failed { .. }));
    }

    #[test]
    fn stderr_lines_are_seen_as_they_come_and_kept_for_the_error() {
        let mut seen = Vec::new();
        let err = Task::new("compiling", "sh")
            .args(["-c", "echo one >&2; echo out; printf 'two' >&2; exit 1"])
            .run_watching_stderr(|line| seen.push(line.to_owned()))
            .unwrap_err();
        assert_eq!(seen, ["one", "two"]);
        assert!(err.to_string().contains("one | two"), "{err}");
    }

    #[test]
    fn missing_program_names_package() {
        let err = Task::new("formatting", "no-such-tool-xyz")
            .package("xyz-tools")
            .run()
            .unwrap_err();
        assert!(matches!(err, TaskError::NotInstalled { .. }));
        assert!(err.to_string().contains("xyz-tools"), "{err}");
    }
}
