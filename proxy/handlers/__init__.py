"""One module per endpoint family; each handler is parse -> plan -> call upstream -> respond."""
