//! The Globular node agent.
