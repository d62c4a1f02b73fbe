# op: service.stop
$DataB64 = '__FAILOVER_DATA__'
$ErrorActionPreference = 'Stop'
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $name = [string]$Data.service
    $timeout = [TimeSpan]::FromSeconds([double]$Data.timeout_s)
    # Get-Service -Name treats * ? [ ] as wildcards: an exact name must match exactly one service.
    if ($name -eq '' -or $name -match '[\*\?\[\]]') {
        throw "invalid service name '$name': wildcard characters are not allowed"
    }
    $found = @(Get-Service -Name $name)
    if ($found.Count -ne 1) {
        throw "expected exactly one service named '$name', found $($found.Count)"
    }
    $svc = $found[0]
    $changed = $false
    if ($svc.Status -ne 'Stopped') {
        # -NoWait: Stop-Service would otherwise wait without any deadline.
        Stop-Service -InputObject $svc -NoWait
        $changed = $true
        try {
            $svc.WaitForStatus('Stopped', $timeout)
        }
        catch {
            $svc.Refresh()
            throw "service '$name' did not stop within $($timeout.TotalSeconds) s: stuck in $([string]$svc.Status)"
        }
    }
    $svc.Refresh()
    [ordered]@{
        ok      = $true
        service = $svc.ServiceName
        state   = [string]$svc.Status
        changed = $changed
    } | ConvertTo-Json -Compress
}
catch {
    [ordered]@{ ok = $false; error = $_.Exception.Message } | ConvertTo-Json -Compress
    exit 1
}
