"""The knowledge base: articles admins keep as Markdown files (issue 19)."""
