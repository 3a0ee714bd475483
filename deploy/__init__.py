"""Running the app for a whole school: several app processes behind one proxy (`make school`)."""
