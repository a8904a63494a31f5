"""Page scripts run by ``st.navigation`` (slide, cohort, train); a package so installs ship them."""
