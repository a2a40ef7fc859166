"""Edge boards: power readers, the board inventory, deployment with Fabric, the board-side runner."""
