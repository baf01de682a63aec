//! Node and workload attestors.
