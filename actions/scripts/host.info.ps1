# op: host.info
$DataB64 = '__FAILOVER_DATA__'
$ErrorActionPreference = 'Stop'
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    [ordered]@{
        ok         = $true
        hostname   = [string]$env:COMPUTERNAME
        ps_version = $PSVersionTable.PSVersion.ToString()
    } | ConvertTo-Json -Compress
}
catch {
    [ordered]@{ ok = $false; error = $_.Exception.Message } | ConvertTo-Json -Compress
    exit 1
}
