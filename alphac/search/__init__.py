"""The search: evolution over mutations, its journal, parent selection and executors (issue #10)."""
