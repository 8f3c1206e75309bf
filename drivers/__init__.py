"""Moving bytes: card readers and code scanners behind one narrow interface."""
