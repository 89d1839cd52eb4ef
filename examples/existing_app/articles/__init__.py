"""An existing application (articles) that adds hybridsearch to its own database."""
